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
    return evaluate.Models.load(inp=True)


@pytest.fixture(scope="module")
def vae_rows(models):
    return evaluate.vae_table(evaluate.vae_round_trip(models.vae, clips=12))


@pytest.fixture(scope="module")
def t2v_rows(models):
    return evaluate.t2v_table(evaluate.text_to_video(models, T2V_CAPTIONS, [SEED]))


@pytest.fixture(scope="module")
def i2v_rows(models):
    return evaluate.i2v_table(evaluate.image_to_video(models, evaluate.first_frames(8), [SEED]))


@pytest.fixture(scope="module")
def lora_rows(models):
    settings = evaluate.Settings.from_workflow("text_to_video_lora")
    judged = evaluate.text_to_video(evaluate.with_lora(models), T2V_CAPTIONS, [SEED], settings,
                                    judge_colour=evaluate.LORA_COLOUR)
    return evaluate.t2v_table(judged)


@pytest.fixture(scope="module")
def inp_rows(models):
    settings = evaluate.Settings.from_workflow("first_last_frame")
    cases = evaluate.first_frames(8, settings=settings)
    return evaluate.inp_table(evaluate.start_end_to_video(models, cases, [SEED], settings))


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
VAE = [  # the 128x128 VAE of run 6 (fp16 file): 33.7 / 30.5 dB on 48 clips (tiny/MODEL_CARD.md)
    ("PSNR mean dB", 33.0, 30.0, True),  # measured 34.9 dB on these 12 clips
    ("shape right", 0.9, 0.95, True),  # measured 12/12
    ("mask IoU (captioned shape)", 0.94, 0.9, True),  # measured 0.97
    ("colour right (every frame)", 1.0, 1.0, True),  # measured 12/12
    ("direction right", 1.0, 1.0, True),  # measured 12/12
]
T2V = [
    ("colour right (every frame)", 0.875, 0.98, True),  # measured 8/8
    ("direction right", 0.875, 0.95, True),  # measured 8/8
    ("shape right", 0.625, 0.9, True),  # measured 6/8 (91.0% of all 144 clips; the 64x64 model: 4/8)
    ("mask IoU", 0.84, 0.85, True),  # measured 0.88 (at CFG 6: 0.83)
    ("speckle", 0.02, 0.02, False),  # measured 0.0% of the background (at CFG 6: 1.3%; 64x64 model: 14.7%)
    ("one object (share of frames)", 0.875, 0.95, True),  # measured 100% of the frames (at CFG 6: 82%)
    ("jerk median (max/mean step share)", 1.6, 2.0, False),  # measured 1.17 (a static clip: inf, one jump: 8)
]
I2V = [
    ("frame-0 object IoU mean", 0.93, 0.9, True),  # measured 0.97
    ("direction right", 0.875, 0.95, True),  # measured 8/8
    ("colour kept in every frame", 0.875, 0.95, True),  # measured 8/8
    ("size max / input (median)", 1.15, 1.2, False),  # measured 1.04 (at CFG 6: 1.17; 64x64 model: 2.42)
    ("size within +-20% of the input", 0.875, 0.95, True),  # measured 8/8 (at CFG 6: 6/8)
]


# The blue LoRA (judged against blue) and the Fun InP model from start + end frames, the same tool;
# targets: the LoRA's and InP's own known-answer targets (90%)
LORA = [
    ("colour right (every frame)", 0.875, 0.9, True),  # measured 8/8 blue
    ("direction right", 0.875, 0.9, True),  # measured 8/8
    ("mask IoU", 0.75, 0.85, True),  # measured 0.82
]
INP = [
    ("start within 3 px", 0.875, 0.9, True),  # measured 8/8
    ("end within 3 px", 0.75, 0.9, True),  # measured 8/8 (median 1.1 px; at CFG 6 the end overshoots)
    ("colour right (every frame)", 0.875, 0.98, True),  # measured 8/8
    ("direction right", 0.875, 0.95, True),  # measured 8/8
    ("mask IoU", 0.82, 0.85, True),  # measured 0.92
]


@pytest.mark.parametrize(("measure", "floor", "target", "higher"), LORA, ids=[m for m, *_ in LORA])
def test_the_blue_lora_judged_against_blue(lora_rows, measure, floor, target, higher):
    _check(lora_rows, measure, floor, target, higher)


@pytest.mark.parametrize(("measure", "floor", "target", "higher"), INP, ids=[m for m, *_ in INP])
def test_fun_inp_from_start_and_end_frames(inp_rows, measure, floor, target, higher):
    _check(inp_rows, measure, floor, target, higher)


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
    assert (t2v.width, t2v.height, t2v.frames) == (128, 128, 9) and t2v.latent_shape() == (16, 3, 16, 16)
    assert t2v.steps >= 10 and t2v.cfg > 1 and i2v.steps >= 10
