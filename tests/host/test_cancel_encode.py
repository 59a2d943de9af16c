"""Cancel everywhere: the VAE encoders (Video To Video, VAE Encode, Image To Video) check the
interrupt between frame batches and report progress, as the decode does, and a cancelled encode
gives its memory back (the same frame-batch callback of cogvideox/vae.py ``_run_batched``)."""

from __future__ import annotations

import time

import pytest
from harness import reliability_models as rm
from harness.reliability import assert_still_serves, free_and_settle, i2v_graph, run_collecting_ws
from harness.reliability_links import encode_graph, v2v_graph

pytestmark = pytest.mark.host

SIZE, FRAMES = 96, 49  # 49 frames in 6 frame batches, several seconds on 2 shared cores


def _long_encode(kind: str, prefix: str) -> dict:
    """Core EmptyImage frames -> the encoder (node 5) -> core SaveLatent: the encode is the long node."""
    api = (v2v_graph if kind == "v2v" else encode_graph)(frames=FRAMES, size=SIZE, prefix=prefix)
    if kind == "v2v":
        api["5"]["inputs"].update(width=SIZE, height=SIZE)
    keep = {"5", "7", "12"}
    api = {k: v for k, v in api.items() if k in keep}
    api["13"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}
    return api


@pytest.fixture(scope="module")
def baseline(comfy_host, comfy_client) -> int:
    """Server RSS in its steady state: after a whole prompt (the tests run one after each cancel),
    one complete long encode of each kind and ComfyUI's free-memory call (see test_faults.py on
    why the warm-up matters: glibc keeps freed heap pages)."""
    rm.ensure_models(comfy_host.base_dir / "models")
    assert_still_serves(comfy_client, prefix="rel2/cancel/warmup")
    for kind in ("v2v", "encode"):
        comfy_client.run(_long_encode(kind, f"rel2/cancel/warmup_{kind}"), timeout=600)
    return free_and_settle(comfy_client, comfy_host)


def _progress(messages: list[dict], node: str) -> list[tuple[int, int]]:
    return [(m["data"]["value"], m["data"]["max"]) for m in messages
            if m["type"] == "progress" and m["data"].get("node") == node]


@pytest.mark.parametrize(("kind", "node_type"), [("v2v", "CogVideoXVideoToVideo"), ("encode", "CogVideoXVAEEncode")])
def test_cancel_during_a_long_encode_stops_it_and_frees_memory(comfy_client, comfy_host, baseline, kind, node_type):
    stopped: list[float] = []

    def on_message(message: dict) -> None:
        if not stopped and message["type"] == "progress" and message["data"].get("node") == "5":
            comfy_client.interrupt()
            stopped.append(time.monotonic())

    api = _long_encode(kind, f"rel2/cancel/{kind}")
    api["12"]["inputs"]["color"] = 0x102030 + len(kind)  # not cached: the encode really runs
    messages = run_collecting_ws(comfy_client, api, on_message=on_message)
    assert stopped, "the encode never reported progress"
    elapsed = time.monotonic() - stopped[0]
    assert messages[-1]["type"] == "execution_interrupted", messages[-1]
    info = messages[-1]["data"]
    # Without the check between frame batches the encode would finish and ComfyUI would stop
    # before the next node (SaveLatent) instead.
    assert info["node_type"] == node_type and info["node_id"] == "5", info
    progress = _progress(messages, "5")
    assert progress[-1][0] < progress[-1][1] == 6, f"the encode ran to its end: {progress}"
    assert elapsed < 10, f"the encode took {elapsed:.1f} s to notice the interrupt"
    now = free_and_settle(comfy_client, comfy_host)
    assert now <= baseline * 1.10, f"RSS {now / 2**20:.0f} MiB after /free, baseline {baseline / 2**20:.0f} MiB"
    assert_still_serves(comfy_client, prefix=f"rel2/cancel/after_{kind}")


def test_encoders_report_progress_per_frame_batch(comfy_client, baseline):
    """The callback that checks for Cancel also moves the node's bar: 9 frames are one batch for
    VAE Encode (49 are 6), the first frame is one for Image To Video."""
    messages = run_collecting_ws(comfy_client, encode_graph(prefix="rel2/cancel/progress_encode"))
    assert messages[-1]["type"] == "execution_success", messages[-1]
    assert _progress(messages, "5") == [(1, 1)]
    api = i2v_graph(prefix="rel2/cancel/progress_i2v", seed=77)
    api["6"]["inputs"]["seed"] = 77
    messages = run_collecting_ws(comfy_client, api)
    assert messages[-1]["type"] == "execution_success", messages[-1]
    assert _progress(messages, "6") == [(1, 1)]
