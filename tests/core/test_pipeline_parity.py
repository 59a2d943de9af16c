"""Full sampling runs against the reference diffusers pipelines (the oracle).

Tiny random transformers (every weight randomised), our ``CogVideoXTransformer`` (and our
``CogVideoXVAE`` for the conditioning image / input video) loaded with the oracle's weights,
the same noise / seed, embeddings and step count. Compared in the oracle's space: scaled
latents ``[B, F, C, h, w]``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXFunControlPipeline,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    CogVideoXVideoToVideoPipeline,
)

from cogvideox.conditioning import image_latent
from cogvideox.configs import VARIANTS, VAEConfig
from cogvideox.pipeline import sample
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae import CogVideoXVAE

torch.set_num_threads(1)

TOL = 1e-4
T, H, W = 3, 8, 12  # latent frames / height / width (9 pixel frames)
STEPS = 5
CFG = 6.0
SCHEDULERS = {"ddim": CogVideoXDDIMScheduler, "dpm": CogVideoXDPMScheduler}


def _reference_scheduler(name: str, variant):
    return SCHEDULERS[name](
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=variant.snr_shift_scale,
        clip_sample=False,
    )


@pytest.fixture(scope="module")
def models(tiny_transformer_configs, randomize):
    """Per variant: (tiny variant, oracle transformer, our transformer with the same weights)."""
    out = {}
    for k, (name, cfg) in enumerate(tiny_transformer_configs.items()):
        ref = randomize(CogVideoXTransformer3DModel(**cfg.to_dict()).eval(), seed=10 + k)
        ours = CogVideoXTransformer(cfg).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        out[name] = (dataclasses.replace(VARIANTS[name], transformer=cfg), ref, ours)
    return out


def _our_vae(ref_vae) -> CogVideoXVAE:
    """Our VAE carrying the oracle VAE's weights (encodes the conditioning / input video)."""
    ours = CogVideoXVAE(VAEConfig.from_dict(dict(ref_vae.config))).eval()
    ours.load_state_dict(ref_vae.state_dict(), strict=True)
    return ours


def _tiny_vae(variant):
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 16),
        down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=variant.scaling_factor,
        invert_scale_latents=variant.invert_scale_latents,
    ).eval()
    return vae  # 2x spatial: 16 x 24 pixels -> 8 x 12 latents


def _embeds(cfg, batch, seed=5):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(batch, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    neg = torch.randn(batch, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    return pos, neg


def _padded(variant):
    p_t = variant.transformer.patch_size_t or 1
    return (-T) % p_t


T2V_CASES = [
    # variant, solver, dynamic cfg, batch, explicit noise (else: the seed path)
    ("2b", "ddim", False, 1, True),
    ("2b", "ddim", True, 2, True),
    ("5b", "dpm", False, 1, True),
    ("5b", "dpm", True, 1, False),
    ("1.5-5b", "dpm", False, 1, False),
    ("1.5-5b", "ddim", True, 1, True),
]


@pytest.mark.parametrize("name,solver,dynamic,batch,explicit_noise", T2V_CASES)
def test_text_to_video_matches_reference(models, name, solver, dynamic, batch, explicit_noise):
    variant, ref, ours = models[name]
    cfg = variant.transformer
    pad = _padded(variant)
    pos, neg = _embeds(cfg, batch)
    noise = torch.randn(batch, 16, T + pad, H, W, generator=torch.Generator().manual_seed(3))
    seed = 1234

    pipe = CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=ref, scheduler=_reference_scheduler(solver, variant)
    )
    expected = pipe(
        height=H * 8,
        width=W * 8,
        num_frames=(T - 1) * 4 + 1,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        use_dynamic_cfg=dynamic,
        generator=torch.Generator().manual_seed(seed),
        latents=noise.permute(0, 2, 1, 3, 4) if explicit_noise else None,  # [B, F, C, h, w]
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        output_type="latent",
        return_dict=False,
    )[0]
    assert expected.shape == (batch, T + pad, 16, H, W)

    x0_seen = []
    got = sample(
        ours,
        variant,
        torch.zeros(batch, 16, T, H, W),
        pos,
        neg,
        steps=STEPS,
        cfg=CFG,
        sampler=solver,
        seed=seed,
        noise=noise if explicit_noise else None,
        dynamic_cfg=dynamic,
        callback=lambda i, n, x0: x0_seen.append((i, n, x0.shape)),
    )
    assert got.shape == (batch, 16, T, H, W)
    assert x0_seen == [(i, STEPS, (batch, 16, T, H, W)) for i in range(STEPS)]
    diff = (got * variant.scaling_factor - expected[:, pad:].permute(0, 2, 1, 3, 4)).abs().max()
    assert diff <= TOL, f"max abs diff {diff:.3g}"
    assert expected.abs().max() > 0.1  # not a trivially small comparison


I2V_CASES = [
    ("5b-i2v", "dpm", False, True),
    ("5b-i2v", "dpm", True, False),
    ("5b-i2v", "ddim", False, True),
    ("1.5-5b-i2v", "dpm", False, False),
    ("1.5-5b-i2v", "ddim", True, True),
]


@pytest.mark.parametrize("name,solver,dynamic,explicit_noise", I2V_CASES)
def test_image_to_video_matches_reference(models, name, solver, dynamic, explicit_noise):
    variant, ref, ours = models[name]
    cfg = variant.transformer
    pad = _padded(variant)
    batch, seed = 1, 77
    vae = _tiny_vae(variant)
    pos, neg = _embeds(cfg, batch)
    image = torch.rand(batch, 3, H * 2, W * 2, generator=torch.Generator().manual_seed(4))  # [0, 1]
    noise = torch.randn(batch, 16, T + pad, H, W, generator=torch.Generator().manual_seed(3))

    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=ref, scheduler=_reference_scheduler(solver, variant)
    )
    expected = pipe(
        image=image,
        height=H * 2,
        width=W * 2,
        num_frames=(T - 1) * 4 + 1,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        use_dynamic_cfg=dynamic,
        generator=torch.Generator().manual_seed(seed),
        latents=noise.permute(0, 2, 1, 3, 4) if explicit_noise else None,  # [B, F, C, h, w]
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        output_type="latent",
        return_dict=False,
    )[0]
    assert expected.shape == (batch, T + pad, 16, H, W)

    # the reference encodes with a posterior draw from the run's generator, then samples with it
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cond = image_latent(_our_vae(vae), (image * 2 - 1)[:, :, None], generator=generator)  # [B, 16, 1, h, w]
    got = sample(
        ours,
        variant,
        torch.zeros(batch, 16, T, H, W),
        pos,
        neg,
        steps=STEPS,
        cfg=CFG,
        sampler=solver,
        generator=generator,
        noise=noise if explicit_noise else None,
        dynamic_cfg=dynamic,
        image_latent=cond,
    )
    diff = (got * variant.scaling_factor - expected[:, pad:].permute(0, 2, 1, 3, 4)).abs().max()
    assert diff <= TOL, f"max abs diff {diff:.3g}"
    assert expected.abs().max() > 0.1


@pytest.mark.parametrize("name,solver,strength", [("2b", "ddim", 0.6), ("5b", "dpm", 0.6), ("5b", "dpm", 0.3)])
def test_video_to_video_matches_reference(models, name, solver, strength):
    variant, ref, ours = models[name]
    seed, batch = 21, 1
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16),
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=variant.scaling_factor,
    ).eval()  # 4x spatial, 4x temporal: 9 x 32 x 48 pixels -> 3 x 8 x 12 latents
    pos, neg = _embeds(variant.transformer, batch)
    video = torch.rand(batch, 9, 3, H * 4, W * 4, generator=torch.Generator().manual_seed(8))  # [B, F, 3, H, W]

    pipe = CogVideoXVideoToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=ref, scheduler=_reference_scheduler(solver, variant)
    )
    expected = pipe(
        video=video,
        height=H * 4,
        width=W * 4,
        num_inference_steps=10,
        strength=strength,
        guidance_scale=CFG,
        use_dynamic_cfg=True,
        generator=torch.Generator().manual_seed(seed),
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        output_type="latent",
        return_dict=False,
    )[0]

    generator = torch.Generator().manual_seed(seed)
    pixels = video.permute(0, 2, 1, 3, 4) * 2 - 1  # [B, 3, F, H, W] in [-1, 1]
    with torch.no_grad():
        latent = _our_vae(vae).encode(pixels, sample=True, generator=generator)  # raw [B, 16, T, h, w]
    steps_run = []
    got = sample(
        ours,
        variant,
        latent,
        pos,
        neg,
        steps=10,
        cfg=CFG,
        sampler=solver,
        generator=generator,
        denoise=strength,
        dynamic_cfg=True,
        callback=lambda i, n, x0: steps_run.append(n),
    )
    assert steps_run == [int(10 * strength)] * int(10 * strength)
    diff = (got * variant.scaling_factor - expected.permute(0, 2, 1, 3, 4)).abs().max()
    assert diff <= TOL, f"max abs diff {diff:.3g}"


def _video_vae(variant):
    """4x spatial, 4x temporal: 9 x 32 x 48 pixels -> 3 x 8 x 12 latents."""
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16),
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=variant.scaling_factor,
    ).eval()


@pytest.mark.parametrize(
    "name,solver,dynamic,cfg,batch",
    [
        ("fun-5b-control", "ddim", False, CFG, 1),
        ("fun-2b-control", "ddim", True, CFG, 2),
        ("fun-5b-control", "ddim", True, 1.0, 1),  # diffusers' Fun Control pipeline steps DDIM only
    ],
)
def test_fun_control_matches_reference(models, name, solver, dynamic, cfg, batch):
    """CogVideoX-Fun Control: the control video's latent (VAE mode x scaling factor) after the noise."""
    from PIL import Image

    from cogvideox.conditioning import image_latent

    variant, ref, ours = models[name]
    seed = 31
    vae = _video_vae(variant)
    pos, neg = _embeds(variant.transformer, batch)
    frames = torch.randint(0, 256, (9, H * 4, W * 4, 3), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    noise = torch.randn(batch, 16, T, H, W, generator=torch.Generator().manual_seed(3))

    pipe = CogVideoXFunControlPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=ref, scheduler=_reference_scheduler(solver, variant)
    )
    expected = pipe(
        control_video=[[Image.fromarray(f.numpy()) for f in frames]] * batch,
        height=H * 4,
        width=W * 4,
        num_inference_steps=STEPS,
        guidance_scale=cfg,
        use_dynamic_cfg=dynamic,
        generator=torch.Generator().manual_seed(seed),
        latents=noise.permute(0, 2, 1, 3, 4),  # [B, F, C, h, w]
        prompt_embeds=pos,
        negative_prompt_embeds=neg if cfg > 1 else None,
        output_type="latent",
        return_dict=False,
    )[0]
    assert expected.shape == (batch, T, 16, H, W)

    pixels = frames.permute(3, 0, 1, 2)[None].float() / 255 * 2 - 1  # [1, 3, F, H, W] in [-1, 1]
    with torch.no_grad():
        control = image_latent(_our_vae(vae), pixels)  # raw VAE mean (the posterior's mode)
    model = _Recorder(ours)
    got = sample(
        model,
        variant,
        torch.zeros(batch, 16, T, H, W),
        pos,
        neg,
        steps=STEPS,
        cfg=cfg,
        sampler=solver,
        generator=torch.Generator().manual_seed(seed),
        noise=noise,
        dynamic_cfg=dynamic,
        concat_latent=control,
    )
    diff = (got * variant.scaling_factor - expected.permute(0, 2, 1, 3, 4)).abs().max()
    assert diff <= TOL, f"max abs diff {diff:.3g}"
    assert expected.abs().max() > 0.1
    x = model.inputs[0][0]
    copies = 2 if cfg > 1 else 1
    assert x.shape == (copies * batch, 32, T, H, W)
    assert torch.allclose(x[:, 16:], (control * variant.scaling_factor).expand(copies * batch, -1, -1, -1, -1))


class _Recorder(torch.nn.Module):
    """Wraps a model and records what it is fed."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.inputs = []

    def forward(self, x, timestep, context, ofs=None):
        self.inputs.append((x.clone(), timestep.clone(), context.clone(), ofs))
        return self.inner(x, timestep, context, ofs=ofs)


@pytest.mark.parametrize("mode,factor", [("diffusers", 1 / 0.7), ("sat", 1.0)])
def test_image_latent_scaling_modes_for_1_5(models, mode, factor):
    variant, _, ours = models["1.5-5b-i2v"]
    model = _Recorder(ours)
    pos, neg = _embeds(variant.transformer, 1)
    raw = torch.randn(1, 16, 1, H, W, generator=torch.Generator().manual_seed(2))
    sample(
        model,
        variant,
        torch.zeros(1, 16, T, H, W),
        pos,
        neg,
        steps=2,
        cfg=CFG,
        image_latent=raw,
        image_latent_scaling=mode,
    )
    x, timestep, context, ofs = model.inputs[0]
    assert x.shape == (2, 32, T + 1, H, W)  # cond + uncond, noise + image channels, padded to even
    assert torch.allclose(x[:, 16:, 0], (raw[:, :, 0] * factor).expand(2, -1, -1, -1), atol=1e-6)
    assert x[:, 16:, 1:].abs().max() == 0  # zero padding after the image frame
    assert torch.equal(context, torch.cat([neg, pos]))  # [uncond, cond] in one batch
    assert torch.equal(timestep, torch.tensor([999, 999]))
    assert float(ofs) == 2.0
