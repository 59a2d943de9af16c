"""The ready-to-run GPU scripts (tools/gpu) import, explain themselves and refuse to run without a GPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu" / "lowvram_check.py"

pytestmark = pytest.mark.host  # the end-to-end dry run starts ComfyUI twice


def test_lowvram_check_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for needle in ("--random-layers", "--keep-gb", "--reserve-vram", "--steps"):
        assert needle in proc.stdout, proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit; on a GPU run the script itself")
def test_lowvram_check_says_it_needs_a_gpu():
    spec = importlib.util.spec_from_file_location("lowvram_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--steps", "1"]) == 2
    assert module.psnr(torch.zeros(4), torch.zeros(4), 1.0) == float("inf")
    assert abs(module.psnr(torch.zeros(4), torch.full((4,), 0.1), 1.0) - 20.0) < 1e-5


def test_lowvram_check_runs_end_to_end_on_the_cpu():
    """--cpu-dry-run: both modes in their own ComfyUI process, the tiny model sampled and decoded,
    compared; on a CPU nothing is streamed, so the frames must agree exactly."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-dry-run", "--steps", "2"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU dry run: lowvram vs normal frames: inf dB" in proc.stdout, proc.stdout
