"""The benchmark helpers that cannot run in full here: the GPU script and the VideoCrafter row."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_helps_and_refuses_without_cuda():
    script = ROOT / "tools" / "gpu" / "bench_gpu.py"
    helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    for section in ("transformer", "fp8", "vae"):
        assert section in helped.stdout
    assert "49 frames x 480 x 720" in helped.stdout  # the documented case is the 5B size
    import torch

    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "no CUDA device" in refused.stderr


def test_videocrafter_row_is_skipped_with_a_message_without_the_reference(monkeypatch, tmp_path, caplog):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import bench_videocrafter

    monkeypatch.setenv("VIDEOCRAFTER_REFERENCE", str(tmp_path / "absent"))
    assert bench_videocrafter.reference_path() is None
    with caplog.at_level(logging.WARNING):
        assert bench_videocrafter.bench_videocrafter(quick=True, repeats=1) == []
    assert "SKIPPED" in caplog.text and "VIDEOCRAFTER_REFERENCE" in caplog.text

