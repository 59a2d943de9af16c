"""Load: 20 prompts queued back to back on the tiny model all complete with 20 distinct, valid
videos, and the server's memory returns to its baseline after ComfyUI's free-memory call."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from harness import reliability_models as rm
from harness.host import output_files
from harness.reliability import assert_still_serves, free_and_settle, rss_bytes, t2v_graph

from cogvideox.video_io import read_video

pytestmark = pytest.mark.host

PROMPTS = 20
STEPS = 4
BATCH_PROMPTS = 4  # batch_size 2 each: 8 videos


@pytest.fixture(scope="module")
def baseline(comfy_host, comfy_client) -> int:
    rm.ensure_models(comfy_host.base_dir / "models")
    assert_still_serves(comfy_client, prefix="load/warmup")
    return free_and_settle(comfy_client, comfy_host)


def test_twenty_prompts_back_to_back(comfy_client, comfy_host, baseline):
    prompt_ids = [
        comfy_client.queue(t2v_graph(steps=STEPS, seed=1000 + i, prefix=f"load/run{i:02d}")) for i in range(PROMPTS)
    ]
    assert len(set(prompt_ids)) == PROMPTS
    peak = 0
    digests = {}
    for i, prompt_id in enumerate(prompt_ids):
        entry = comfy_client.wait(prompt_id, timeout=600)
        peak = max(peak, rss_bytes(comfy_host))
        assert entry["status"]["status_str"] == "success", entry["status"]
        (record,) = [r for r in output_files(entry) if r["filename"].endswith(".mp4")]
        assert record["filename"].startswith(f"run{i:02d}_"), record
        data = comfy_client.view(record["filename"], record["subfolder"], record["type"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / record["filename"]
            path.write_bytes(data)
            frames, info = read_video(str(path))
        assert (info.frames, info.width, info.height) == (rm.FRAMES, rm.SIZE, rm.SIZE), info
        assert frames.shape == (rm.FRAMES, rm.SIZE, rm.SIZE, 3)
        digests[i] = hashlib.sha256(frames.numpy().tobytes()).hexdigest()
    assert len(set(digests.values())) == PROMPTS, "different seeds gave identical videos"
    queue = comfy_client.queue_state()
    assert queue["queue_running"] == [] and queue["queue_pending"] == [], queue
    after = free_and_settle(comfy_client, comfy_host)
    mib = 2**20
    assert after <= baseline * 1.10, (
        f"RSS {after / mib:.0f} MiB after /free vs baseline {baseline / mib:.0f} MiB (peak {peak / mib:.0f} MiB)"
    )


def test_batch_of_two_prompts_back_to_back(comfy_client, comfy_host, baseline):
    """batch_size 2: every prompt saves two videos (one file each), all distinct; memory comes back."""
    prompt_ids = [
        comfy_client.queue(t2v_graph(steps=STEPS, seed=2000 + i, batch_size=2, prefix=f"load/batch{i:02d}"))
        for i in range(BATCH_PROMPTS)
    ]
    digests = set()
    for i, prompt_id in enumerate(prompt_ids):
        entry = comfy_client.wait(prompt_id, timeout=600)
        assert entry["status"]["status_str"] == "success", entry["status"]
        records = [r for r in output_files(entry) if r["filename"].endswith(".mp4")]
        assert [r["filename"] for r in records] == [f"batch{i:02d}_00001_.mp4", f"batch{i:02d}_00002_.mp4"]
        for record in records:
            data = comfy_client.view(record["filename"], record["subfolder"], record["type"])
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / record["filename"]
                path.write_bytes(data)
                frames, info = read_video(str(path))
            assert (info.frames, info.width, info.height) == (rm.FRAMES, rm.SIZE, rm.SIZE), info
            digests.add(hashlib.sha256(frames.numpy().tobytes()).hexdigest())
    assert len(digests) == 2 * BATCH_PROMPTS, "videos of a batch or of different seeds are identical"
    after = free_and_settle(comfy_client, comfy_host)
    assert after <= baseline * 1.10, f"RSS {after / 2**20:.0f} MiB after /free vs baseline {baseline / 2**20:.0f} MiB"
