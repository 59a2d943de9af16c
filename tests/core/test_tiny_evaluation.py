"""The shipped tiny model judged by the model-free evaluation tool (tools/tiny/evaluate.py) on a
subset of its outputs: the tool's own tables, at the shipped workflow's settings.

Each measure asserts a floor the shipped weights honestly reach on this subset (so a regression in
the model, the pipeline or the tool fails), then the target of issue 16 ("The embedded default
looks right"): met -> passes, missed -> xfail with the measured number. The full measurement
(48 captions x 3 seeds) is the tool's CLI: ``.venv/bin/python tools/tiny/evaluate.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tiny_evaluate", ROOT / "tools" / "tiny" / "evaluate.py")
evaluate = sys.modules.setdefault("tiny_evaluate", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(evaluate)  # registered first: its dataclasses look their module up

pytest.importorskip("transformers")
torch.set_num_threads(1)  # many small ops: more threads only spin on a busy machine

SEED = evaluate.SEEDS[0]
T2V_CAPTIONS = evaluate.CAPTIONS[::6]  # 8: every colour, shape and direction


@pytest.fixture(scope="module")
def models():
    return evaluate.Models.load()


@pytest.fixture(scope="module")
def vae_rows(models):
    return evaluate.vae_table(evaluate.vae_round_trip(models.vae, clips=12))


@pytest.fixture(scope="module")
def t2v_rows(models):
    return evaluate.t2v_table(evaluate.text_to_video(models, T2V_CAPTIONS, [SEED]))


@pytest.fixture(scope="module")
def i2v_rows(models):
    return evaluate.i2v_table(evaluate.image_to_video(models, evaluate.first_frames(8), [SEED]))


def _check(rows: dict, measure: str, floor: float, target: float, higher_is_better: bool = True) -> None:
    value = rows[measure]
    if higher_is_better:
        assert value >= floor, f"{measure}: {value:.3f} below the shipped model's floor {floor}\n{rows}"
        met = value >= target
    else:
        assert value <= floor, f"{measure}: {value:.3f} above the shipped model's ceiling {floor}\n{rows}"
        met = value <= target
    if not met:
        pytest.xfail(f"{measure}: {value:.3f}, issue 16's target {target}")


# (measure, floor on this subset, issue 16's target, higher is better); floors are the shipped
# weights' measured values on the subset (see each comment) less about one clip's worth
VAE = [
    ("PSNR mean dB", 24.0, 30.0, True),  # measured 25.2 dB on these 12 clips (24.5 on 48)
    ("shape right", 0.25, 0.95, True),  # measured 4/12: the circles only (35% of 48)
    ("mask IoU (captioned shape)", 0.75, 0.9, True),  # measured 0.82 (0.81 on 48)
    ("colour right (every frame)", 1.0, 1.0, True),  # measured 12/12
    ("direction right", 1.0, 1.0, True),  # measured 12/12
]
T2V = [
    ("colour right (every frame)", 0.75, 0.98, True),  # measured 7/8
    ("direction right", 0.75, 0.95, True),  # measured 7/8
    ("shape right", 0.375, 0.9, True),  # measured 4/8
    ("mask IoU", 0.6, 0.85, True),  # measured 0.69
    ("speckle", 0.2, 0.02, False),  # measured 14.7% of the background
    ("one object (share of frames)", 0.4, 0.95, True),  # measured 51% of the frames
    ("jerk median (max/mean step share)", 5.0, 2.0, False),  # measured 3.9 (a static clip: inf, one jump: 8)
]
I2V = [
    ("frame-0 object IoU mean", 0.6, 0.9, True),  # measured 0.67
    ("direction right", 0.875, 0.95, True),  # measured 8/8
    ("colour kept in every frame", 0.875, 0.95, True),  # measured 8/8
    ("size max / input (median)", 3.0, 1.2, False),  # measured 2.42: the object doubles
]


@pytest.mark.parametrize(("measure", "floor", "target", "higher"), VAE, ids=[m for m, *_ in VAE])
def test_vae_round_trip_of_held_out_clips(vae_rows, measure, floor, target, higher):
    _check(vae_rows, measure, floor, target, higher)


@pytest.mark.parametrize(("measure", "floor", "target", "higher"), T2V, ids=[m for m, *_ in T2V])
def test_text_to_video_at_the_workflow_settings(t2v_rows, measure, floor, target, higher):
    _check(t2v_rows, measure, floor, target, higher)


@pytest.mark.parametrize(("measure", "floor", "target", "higher"), I2V, ids=[m for m, *_ in I2V])
def test_image_to_video_from_fresh_first_frames(i2v_rows, measure, floor, target, higher):
    _check(i2v_rows, measure, floor, target, higher)


def test_the_tool_reads_the_shipped_workflow_settings():
    t2v = evaluate.Settings.from_workflow("text_to_video")
    i2v = evaluate.Settings.from_workflow("image_to_video")
    assert (t2v.width, t2v.height, t2v.frames) == (64, 64, 9) and t2v.latent_shape() == (16, 3, 8, 8)
    assert t2v.steps >= 10 and t2v.cfg > 1 and i2v.steps >= 10
