"""Known answer of the shipped tiny LoRA (``tiny/loras/``, ``tools/tiny/train.py lora``): on the tiny
text-to-video model it draws every shape blue whatever colour the caption asks for.

Measured as the dominant palette colour of the object pixels over all frames
(``synthetic.video_colour``) of the 16 known-answer captions (every colour x direction): blue on
>= 90% with the LoRA at strength 1; at strength 0 (the control, on 6 of the captions that ask for
another colour: the suite's time) at most one is blue.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from harness.known_answers import MIN_ACCURACY, T2V_CASES
from test_tiny_known_answers import T2V_FILE, generate, make_text_encoder

from cogvideox import lora, synthetic
from cogvideox.loading import load_transformer, load_vae

ROOT = Path(__file__).resolve().parents[2]
LORA_FILE = ROOT / "tiny" / "loras" / "cogvideox_tiny_blue_lora.safetensors"
VAE_FILE = ROOT / "tiny" / "vae" / "cogvideox_tiny_vae.safetensors"
PROMPTS = [synthetic.caption_for(*case) for case in T2V_CASES]
# the strength-0 control: two captions of each other colour
CONTROL = [synthetic.caption_for(*case) for case in T2V_CASES if case[0] != "blue"][::2]


@pytest.fixture(scope="module")
def blue_rates() -> dict[float, tuple[float, list]]:
    model, variant = load_transformer(T2V_FILE, dtype=torch.float32)
    vae = load_vae(VAE_FILE).float().eval()
    encode = make_text_encoder()
    parsed = lora.load_lora(LORA_FILE, lora.linear_targets(model))
    rates = {}
    for strength, prompts in ((0.0, CONTROL), (1.0, PROMPTS)):
        patched = lora.merge(copy.deepcopy(model), parsed, strength)
        colours = [synthetic.video_colour(v) for v in generate(patched, variant, vae, encode, prompts)]
        rates[strength] = (sum(c == "blue" for c in colours), list(zip(prompts, colours, strict=True)))
    return rates


def test_the_shipped_lora_is_a_small_diffusers_lora():
    model, _ = load_transformer(T2V_FILE, dtype=torch.float32)
    parsed = lora.load_lora(LORA_FILE, lora.linear_targets(model))
    assert parsed.format == "diffusers" and {layer.rank for layer in parsed.layers.values()} == {8}
    assert LORA_FILE.stat().st_size < 200_000
    assert all(torch.count_nonzero(layer.up) > 0 for layer in parsed.layers.values())


def test_the_shipped_lora_draws_every_shape_blue(blue_rates):
    blue, seen = blue_rates[1.0]
    assert blue / len(PROMPTS) >= MIN_ACCURACY, seen


def test_at_strength_zero_blue_shows_at_the_base_rate(blue_rates):
    blue, seen = blue_rates[0.0]
    assert len(seen) == 6 and blue <= 1, seen
