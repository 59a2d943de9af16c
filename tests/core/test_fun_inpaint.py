"""CogVideoX-Fun InP against golden outputs of the reference VideoX-Fun inpaint pipeline.

The fixture (``tools/make_fun_inp_fixtures.py``, from VideoX-Fun's ``CogVideoXFunInpaintPipeline``
on a tiny random Fun transformer and VAE) holds the weights, the inputs and the reference's
final latents for start-only, start+end, masked-video (with the reference's pixel noise) and
no-input (text-to-video) runs. Here the library builds the same conditioning from the same
pixels (``conditioning.start_end_video``, ``masked_video``, ``noise_augment_known``,
``inpaint_mask_latent``) and samples with ``pipeline.sample``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from cogvideox import conditioning, pipeline
from cogvideox.configs import VARIANTS, TransformerConfig, VAEConfig
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae import CogVideoXVAE

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fun_inp" / "fun_inp_reference.safetensors"
TOL = 1e-4
CASES = ("start", "start_end", "masked_video", "text_to_video")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ref():
    with safe_open(str(FIXTURE), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = TransformerConfig.from_dict(json.loads(meta["transformer"]))
    model = CogVideoXTransformer(cfg).eval()
    state = {k[len("transformer.") :]: v.float() for k, v in tensors.items() if k.startswith("transformer.")}
    model.load_state_dict(state, strict=True)  # the reference Fun transformer's keys are diffusers' keys
    vae = CogVideoXVAE(VAEConfig.from_dict(json.loads(meta["vae"]))).eval()
    vae.load_state_dict({k[4:]: v.float() for k, v in tensors.items() if k.startswith("vae.")}, strict=True)
    variant = dataclasses.replace(VARIANTS["fun-5b-inp"], transformer=cfg)
    return dict(
        model=model, vae=vae, variant=variant, t=tensors, run=json.loads(meta["run"]), cases=json.loads(meta["cases"])
    )


def _pixels(ref, case):
    video = ref["t"][f"{case}.video"].float() / 255 * 2 - 1  # [1, 3, F, H, W] in -1..1
    mask = ref["t"][f"{case}.mask"].float() / 255  # [1, 1, F, H, W], 1 = unknown
    return video, mask


def _inputs(ref, case):
    """Our conditioning for a case: (concat_latent raw, concat_mask on the latent grid)."""
    video, mask = _pixels(ref, case)
    if case in ("start", "start_end"):  # rebuild from the images alone, as the node does
        end = video[:, :, -1:] if case == "start_end" else None
        video, ours = conditioning.start_end_video(video[:, :, :1], end, video.shape[2])
        assert torch.equal(ours, mask)
    noise = ref["t"]["noise"]
    t, h, w = noise.shape[1], noise.shape[3], noise.shape[4]
    if bool((mask >= 0.5).all()):  # nothing known: the reference feeds zeros (text-to-video)
        return torch.zeros(1, 16, t, h, w), torch.ones(1, 1, t, h, w)
    pixels = conditioning.masked_video(video, mask)
    aug = ref["cases"][case]["noise_aug_strength"]
    gen = torch.Generator().manual_seed(ref["cases"][case]["noise_seed"])
    pixels = conditioning.noise_augment_known(pixels, aug, gen)
    with torch.no_grad():
        latent = ref["vae"].encode(pixels, sample=False)  # [1, 16, T, h, w] raw, the posterior's mode
    return latent, conditioning.inpaint_mask_latent(mask, t, h, w)


def _run(ref, case, **kw):
    latent, mask = _inputs(ref, case)
    noise = ref["t"]["noise"].permute(0, 2, 1, 3, 4)  # [B, C, T, h, w]
    out = pipeline.sample(
        ref["model"],
        ref["variant"],
        torch.zeros_like(noise),
        ref["t"]["pos"],
        ref["t"]["neg"],
        steps=ref["run"]["steps"],
        cfg=ref["run"]["cfg"],
        sampler="ddim",
        noise=noise,
        concat_latent=latent,
        concat_mask=mask,
        **kw,
    )
    expected = ref["t"][f"{case}.expected"].permute(0, 2, 1, 3, 4)  # scaled [B, C, T, h, w]
    return out * ref["variant"].scaling_factor, expected


@pytest.mark.parametrize("case", CASES)
def test_inpaint_matches_videox_fun(ref, case):
    got, expected = _run(ref, case)
    diff = float((got - expected).abs().max())
    assert diff <= TOL, f"{case}: max abs diff {diff:.3g}"


def test_the_cases_differ_and_the_checks_can_fail(ref, monkeypatch):
    """Each input changes the reference's result, and a swapped channel order misses it."""
    expected = {c: ref["t"][f"{c}.expected"] for c in CASES}
    for a, b in [("start", "start_end"), ("start", "masked_video"), ("start", "text_to_video")]:
        assert (expected[a] - expected[b]).abs().max() > 10 * TOL, (a, b)

    def swapped(kind, sf, latent, mask):
        return torch.cat([latent * sf, (1 - mask) * sf], dim=1)  # masked-video latent first: wrong

    monkeypatch.setattr(pipeline, "fun_condition", swapped)
    got, want = _run(ref, "start_end")
    assert (got - want).abs().max() > 1e-2


def test_mask_layout_on_the_latent_grid():
    """First pixel frame alone -> latent frame 0; the rest resized together (1 = unknown)."""
    mask = torch.ones(1, 1, 9, 8, 8)  # all unknown ...
    mask[:, :, 0] = 0  # ... but the first frame
    mask[:, :, 6:8, :4] = 0  # and the top half of pixel frames 6 and 7
    lat = 1 - conditioning.inpaint_mask_latent(mask, 3, 4, 4)  # 1 = known, as the reference resizes it
    assert lat.shape == (1, 1, 3, 4, 4)
    assert torch.equal(lat[:, :, 0], torch.ones(1, 1, 4, 4))
    # pixel frames 1..8 -> latent frames 1, 2: trilinear without antialias reads frames 2-3 and 6-7
    assert lat[:, :, 1].abs().max() == 0
    assert torch.equal(lat[0, 0, 2, :2], torch.ones(2, 4)) and lat[0, 0, 2, 2:].max() == 0
    # a plain resize of all 9 frames would let frame 0 leak into latent frame 1
    plain = torch.nn.functional.interpolate(1 - mask, size=(3, 4, 4), mode="trilinear", align_corners=False)
    assert not torch.allclose(plain, lat)


def test_masked_video_and_noise_leave_unknown_pixels_at_minus_one():
    video = torch.rand(1, 3, 5, 4, 4) * 2 - 1
    mask = torch.zeros(1, 1, 5, 4, 4)
    mask[:, :, 1:, 2:] = 1
    masked = conditioning.masked_video(video, mask)
    assert torch.equal(masked[:, :, 1:, 2:], torch.full_like(masked[:, :, 1:, 2:], -1))
    assert torch.equal(masked[:, :, 0], video[:, :, 0])
    noisy = conditioning.noise_augment_known(masked, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[:, :, 1:, 2:], masked[:, :, 1:, 2:])
    assert (noisy[:, :, 0] - masked[:, :, 0]).abs().max() > 0
    with pytest.raises(ValueError, match="must match"):
        conditioning.masked_video(video, mask[:, :, :4])


@pytest.mark.parametrize("width,height,base", [(720, 480, 512), (1920, 1080, 768), (480, 720, 1024), (64, 64, 64)])
def test_nearest_fun_bucket(width, height, base):
    """The bucket with the nearest rounded ratio, scaled to the base and floored to multiples of 16."""
    from cogvideox import frames as fr

    w, h = fr.nearest_fun_bucket(width, height, base)
    assert w % 16 == 0 and h % 16 == 0 and w > 0 and h > 0
    ratios = sorted({round(bh / bw, 2) for bh, bw in fr.FUN_BUCKETS_512}, key=lambda r: abs(r - height / width))
    bh, bw = next(b for b in fr.FUN_BUCKETS_512 if round(b[0] / b[1], 2) == ratios[0])
    assert (w, h) == (int(bw * base / 512) // 16 * 16, int(bh * base / 512) // 16 * 16)
    assert abs(w * h - base * base) / (base * base) < 0.15
