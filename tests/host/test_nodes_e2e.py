"""The node set end to end in the real host: shipped workflows, interop with core nodes,
interrupts, and the MP4 the save node writes."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
from harness.host import ExecutionFailed, output_files

from cogvideox import synthetic
from cogvideox.video_io import read_video

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
STEMS = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
PACK_PREFIX = "CogVideoX"


def _api(stem: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{stem}.json").read_text())


def _ui(stem: str) -> dict:
    return json.loads((WORKFLOWS / f"{stem}.json").read_text())


def _videos(client, entry) -> list[tuple[Path, object, dict]]:
    out = []
    for record in output_files(entry):
        if not record["filename"].endswith((".mp4", ".webm")):
            continue
        data = client.view(record["filename"], record["subfolder"], record["type"])
        tmp = Path(tempfile.mkdtemp()) / record["filename"]
        tmp.write_bytes(data)
        frames, info = read_video(str(tmp))
        out.append((tmp, frames, info))
    return out


def _node_inputs(api: dict, class_type: str) -> dict:
    return next(n["inputs"] for n in api.values() if n["class_type"] == class_type)


@pytest.mark.parametrize("stem", STEMS)
def test_workflow_writes_the_expected_video_with_the_workflow_embedded(comfy_client, stem):
    api, ui = _api(stem), _ui(stem)
    prompt_id = comfy_client.queue(api, extra_data={"extra_pnginfo": {"workflow": ui}})
    entry = comfy_client.wait(prompt_id, timeout=600)
    videos = _videos(comfy_client, entry)
    assert len(videos) == 1, f"expected one video from {stem}, got {output_files(entry)}"
    path, frames, info = videos[0]
    save = _node_inputs(api, "CogVideoXSaveVideo")
    if "CogVideoXEmptyLatent" in {n["class_type"] for n in api.values()}:
        size = _node_inputs(api, "CogVideoXEmptyLatent")
        expected = (size["frames"], size["height"], size["width"])
    elif "CogVideoXImageToVideo" in {n["class_type"] for n in api.values()}:
        size = _node_inputs(api, "CogVideoXImageToVideo")
        expected = (size["frames"], size["height"], size["width"])
    elif "VideoCrafterEmptyLatent" in {n["class_type"] for n in api.values()}:
        size = _node_inputs(api, "VideoCrafterEmptyLatent")
        expected = (size["frames"], size["height"], size["width"])
    elif fun := {"CogVideoXFunInpaintConditioning", "CogVideoXFunControlConditioning"} & {
        n["class_type"] for n in api.values()
    }:
        size = _node_inputs(api, fun.pop())
        expected = (size["frames"], size["height"], size["width"])
    else:  # video-to-video and the VAE round trip keep the source video's frames (4k+1)
        expected = (info.frames, info.height, info.width)
        assert (info.frames - 1) % 4 == 0
    assert (info.frames, info.height, info.width) == expected
    assert frames.shape == (expected[0], expected[1], expected[2], 3)
    assert info.fps == pytest.approx(save["fps"])
    assert path.name.startswith(save["filename_prefix"].split("/")[-1])
    assert json.loads(info.metadata["workflow"]) == ui
    stored = json.loads(info.metadata["prompt"])
    for node in stored.values():
        node.pop("is_changed", None)  # ComfyUI records its change-detection hashes here
    assert stored == api
    assert frames.std() > 0.01, "the video is a flat colour"


def test_every_node_appears_in_a_shipped_workflow(comfy_client):
    ours = {k for k in comfy_client.object_info() if k.startswith(PACK_PREFIX)}
    used = {n["type"] for stem in STEMS for n in _ui(stem)["nodes"]}
    assert ours, "the pack registered no node"
    assert ours - used == set(), f"nodes in no shipped workflow: {sorted(ours - used)}"


def _t2v_graph(steps: int = 4) -> dict:
    api = _api("text_to_video")
    sampler = next(n for n in api.values() if n["class_type"] == "CogVideoXSampler")
    sampler["inputs"]["steps"] = steps
    return api


def test_decoded_frames_feed_a_core_image_node(comfy_client):
    api = _t2v_graph()
    decode = next(k for k, n in api.items() if n["class_type"] == "CogVideoXVAEDecode")
    api["90"] = {"class_type": "ImageInvert", "inputs": {"image": [decode, 0]}}
    api["91"] = {"class_type": "SaveImage", "inputs": {"images": ["90", 0], "filename_prefix": "interop/inverted"}}
    entry = comfy_client.run(api, timeout=600)
    pngs = [r for r in output_files(entry) if r["filename"].endswith(".png")]
    frames = _node_inputs(api, "CogVideoXEmptyLatent")["frames"]
    assert len(pngs) == frames


def test_a_core_image_feeds_image_to_video(comfy_client):
    """A first frame made only with core image nodes (a red square composited on grey) drives I2V."""
    api = _api("image_to_video")
    i2v = next(k for k, n in api.items() if n["class_type"] == "CogVideoXImageToVideo")
    size = api[i2v]["inputs"]
    grey = {"width": 128, "height": 128, "batch_size": 1, "color": 0x383838}
    api["95"] = {"class_type": "EmptyImage", "inputs": grey}
    api["96"] = {"class_type": "EmptyImage", "inputs": {"width": 54, "height": 54, "batch_size": 1, "color": 0xE61F1F}}
    api["97"] = {
        "class_type": "ImageCompositeMasked",
        "inputs": {"destination": ["95", 0], "source": ["96", 0], "x": 37, "y": 9, "resize_source": False},
    }
    api[i2v]["inputs"]["image"] = ["97", 0]
    # the caption matches the image, as in the tiny model's training (a conflicting caption's colour wins there)
    positive = next(n for n in api.values() if n.get("_meta", {}).get("title") == "Positive prompt")
    positive["inputs"]["text"] = "a red square moving down"
    entry = comfy_client.run(api, timeout=600)
    (_, frames, info) = _videos(comfy_client, entry)[0]
    assert (info.frames, info.height, info.width) == (size["frames"], size["height"], size["width"])
    first = frames[0].permute(2, 0, 1) * 2 - 1  # [3, H, W] in -1..1
    assert synthetic.dominant_colour(first) == "red", "the first frame lost the red square of the core image"
    x, y = synthetic.centroids(first.unsqueeze(1))[0].tolist()
    assert abs(x - 64) < 8 and abs(y - 36) < 8, f"the square moved from where the image has it in frame 0: {(x, y)}"


def test_interrupt_during_sampling_then_next_prompt_runs(comfy_client):
    api = _t2v_graph(steps=400)
    prompt_id = comfy_client.queue(api)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the sampler is running
        running = comfy_client.queue_state().get("queue_running", [])
        if any(item[1] == prompt_id for item in running):
            break
        time.sleep(0.2)
    time.sleep(3.0)
    comfy_client.interrupt()
    entry = comfy_client.wait(prompt_id, timeout=120, check=False)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    assert "execution_success" not in kinds
    entry = comfy_client.run(_t2v_graph(steps=2), timeout=600)
    assert entry["status"]["status_str"] == "success"


def test_node_errors_name_the_node_and_the_fix(comfy_client):
    api = _t2v_graph(steps=2)
    loader = next(k for k, n in api.items() if n["class_type"] == "CogVideoXModelLoader")
    api[loader]["inputs"]["model_name"] = "cogvideox_tiny_i2v.safetensors"  # image model without an image
    with pytest.raises(ExecutionFailed) as failure:
        comfy_client.run(api, timeout=600)
    message = str(failure.value)
    assert "CogVideoX Sampler" in message, message
    assert "image-to-video" in message and "Image To Video" in message
