"""Batches of videos through the real host: batch_size 2 saves one file per video (and the node's
preview lists them all), VAE Decode -> VAE Encode / Video To Video keep the batch, and
Save Video's frames_per_video cuts frames from other nodes into videos."""

from __future__ import annotations

import pytest
from harness import reliability_models as rm
from harness.reliability import i2v_graph, t2v_graph
from harness.reliability_links import psnr, saved_videos

pytestmark = pytest.mark.host

DIFFERENT_DB = 30.0  # two videos of a batch come from different noise


@pytest.fixture
def client(comfy_host, comfy_client):
    rm.ensure_models(comfy_host.base_dir / "models")
    return comfy_client


def _videos(client, api, node: str = "10"):
    entry = client.run(api, timeout=300)
    listed = entry["outputs"][node]["images"]
    videos = saved_videos(client, {"outputs": {node: entry["outputs"][node]}})
    assert [r["filename"] for r in listed] == [name for name, _, _ in videos]
    return videos


def _assert_two_distinct(videos, frames: int = rm.FRAMES):
    assert len(videos) == 2, [name for name, _, _ in videos]
    for _, info, _ in videos:
        assert (info.frames, info.width, info.height, round(info.fps)) == (frames, rm.SIZE, rm.SIZE, 8), info
    assert videos[0][0] != videos[1][0]
    assert psnr(videos[0][2], videos[1][2]) < DIFFERENT_DB, "the two videos of the batch are the same"


def test_text_to_video_batch_of_two_saves_two_files(client):
    videos = _videos(client, t2v_graph(batch_size=2, prefix="rel2/batch/t2v"))
    _assert_two_distinct(videos)
    assert [name[-len("_00001_.mp4"):] for name, _, _ in videos] == ["_00001_.mp4", "_00002_.mp4"]


def test_image_to_video_batch_of_two_saves_two_files(client):
    api = i2v_graph(prefix="rel2/batch/i2v")
    api["6"]["inputs"]["batch_size"] = 2
    api["6"]["inputs"]["noise_aug_strength"] = 0.05
    assert len(_videos(client, api)) == 2


def _second_pass(api: dict, through: dict) -> dict:
    """Append: node 9's frames -> ``through`` (node 13) -> sampler 14 (denoise 0.5) -> decode 15 -> save 16."""
    api["13"] = through
    api["14"] = {**api["8"], "inputs": {**api["8"]["inputs"], "latent": ["13", 0], "denoise": 0.5}}
    api["15"] = {**api["9"], "inputs": {**api["9"]["inputs"], "samples": ["14", 0]}}
    api["16"] = {**api["10"], "inputs": {**api["10"]["inputs"], "images": ["15", 0],
                                          "filename_prefix": api["10"]["inputs"]["filename_prefix"] + "_second"}}
    return api


@pytest.mark.parametrize(
    "through",
    [
        {"class_type": "CogVideoXVAEEncode",
         "inputs": {"vae": ["7", 0], "images": ["9", 0], "tiling": "off", "tile_size": 256}},
        {"class_type": "CogVideoXVideoToVideo",
         "inputs": {"vae": ["7", 0], "images": ["9", 0], "width": 64, "height": 64, "resize_mode": "crop"}},
    ],
    ids=["vae-encode", "video-to-video"],
)
def test_decode_then_encode_keeps_the_batch(client, through):
    api = _second_pass(t2v_graph(batch_size=2, prefix=f"rel2/batch/{through['class_type']}"), through)
    _assert_two_distinct(_videos(client, api, node="16"))


def test_frames_per_video_cuts_frames_from_other_nodes(client):
    api = t2v_graph(prefix="rel2/batch/split")
    api["12"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 18, "color": 0}}
    api["10"]["inputs"]["images"] = ["12", 0]
    (whole,) = _videos(client, api)
    assert whole[1].frames == 18  # core images carry no batch structure: one video
    api["10"]["inputs"]["frames_per_video"] = 9
    api["10"]["inputs"]["filename_prefix"] = "rel2/batch/split9"
    videos = _videos(client, api)
    assert [info.frames for _, info, _ in videos] == [9, 9]
