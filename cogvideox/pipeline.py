"""The sampling loop used by the nodes: latents in, latents out (raw VAE space, ``[B, C, T, H, W]``).

``sample`` reproduces the reference CogVideoX pipelines (text-to-video, image-to-video,
video-to-video) step for step: same schedules, same noise draws from the same seed, same
guidance, same 1.5 frame padding. The single place that calls the network is ``Denoiser``
(guidance, the v-prediction conversion and NaN detection live there; a step cache wraps it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from . import guidance
from .conditioning import i2v_condition
from .configs import Variant
from .samplers import SAMPLERS, frames_first_noise
from .schedules import Schedule, add_noise, make_schedule

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, torch.Tensor], None]


def _param(model) -> torch.Tensor | None:
    if isinstance(model, nn.Module):
        return next(model.parameters(), None)
    return None


class Denoiser:
    """``denoiser(x, i) -> x0``: one guided network call at step ``i`` and the x0 it implies.

    ``model(x[B,C,T,H,W], timestep[B], context[B,L,D], ofs=None) -> v`` is any callable with the
    transformer's signature. ``x`` is scaled VP-space float32; ``image_cond`` (I2V, scaled, already
    padded to ``x``'s frames) is concatenated on channels. To cache steps, subclass and override
    ``velocity`` (it may return a stored result instead of calling ``forward``).
    """

    def __init__(
        self,
        model: Callable[..., torch.Tensor],
        schedule: Schedule,
        positive: torch.Tensor,
        negative: torch.Tensor | None,
        *,
        cfg: float,
        dynamic_cfg: bool = False,
        image_cond: torch.Tensor | None = None,
        ofs: float | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.model = model
        self.schedule = schedule
        self.positive = positive.to(dtype)
        self.negative = negative.to(dtype) if negative is not None else None
        self.cfg = cfg
        self.dynamic_cfg = dynamic_cfg
        self.uses_cfg = cfg > 1.0  # decided once per run, as the reference does
        self.image_cond = image_cond
        self.ofs = ofs
        self.dtype = dtype
        if self.uses_cfg and self.negative is None:
            raise ValueError("cfg > 1 needs negative embeddings (encode an empty prompt for the usual CFG)")

    def forward(self, x: torch.Tensor, i: int, context: torch.Tensor) -> torch.Tensor:
        """One network call on a (possibly cond+uncond doubled) batch."""
        if self.image_cond is not None:
            copies = x.shape[0] // self.image_cond.shape[0]  # 2 with guidance
            cond = torch.cat([self.image_cond] * copies)  # [copies*B, C, T, h, w]
            x = torch.cat([x, cond.to(x.dtype)], dim=1)  # [copies*B, 2C, T, h, w]
        timestep = self.schedule.timesteps[i].to(x.device).expand(x.shape[0])  # [B]
        ofs = None if self.ofs is None else torch.full((1,), self.ofs, device=x.device, dtype=self.dtype)
        return self.model(x.to(self.dtype), timestep, context, ofs=ofs)

    def scale(self, i: int) -> float:
        timestep = int(self.schedule.timesteps[i])
        return guidance.guidance_scale(
            self.cfg, dynamic=self.dynamic_cfg, timestep=timestep, num_steps=len(self.schedule)
        )

    def velocity(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The guided v-prediction (float32); ``positive``/``negative`` have ``x``'s batch."""
        return guidance.guided(
            lambda xs, ctx: self.forward(xs, i, ctx),
            x,
            self.positive,
            self.negative,
            self.scale(i),
            self.uses_cfg,
        )

    def __call__(self, x: torch.Tensor, i: int) -> torch.Tensor:
        v = self.velocity(x, i)
        if not torch.isfinite(v).all():
            raise FloatingPointError(
                f"the model output contains NaN/inf at step {i + 1}/{len(self.schedule)} "
                f"(timestep {int(self.schedule.timesteps[i])}); CogVideoX overflows in float16, "
                "load the transformer in bfloat16 (or float32)"
            )
        a = self.schedule.alpha(i)
        return float(a.sqrt()) * x - float((1 - a).sqrt()) * v


def _pad_front(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Prepend copies of the first ``pad`` frames: ``[B, C, T, h, w] -> [B, C, T + pad, h, w]``."""
    return torch.cat([x[:, :, :pad], x], dim=2) if pad else x


def _scale_image_latent(image_latent: torch.Tensor, variant: Variant, mode: str) -> torch.Tensor:
    if not variant.invert_scale_latents:
        return image_latent * variant.scaling_factor
    if mode == "diffusers":
        return image_latent / variant.scaling_factor
    if mode == "sat":
        return image_latent
    raise ValueError(f"image_latent_scaling must be 'diffusers' or 'sat', got {mode!r}")


def _batch(t: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if t.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch {t.shape[0]}, the latent has {batch}")
    return t.expand(batch, *t.shape[1:]) if t.shape[0] != batch else t


@torch.no_grad()
def sample(
    model: Callable[..., torch.Tensor],
    variant: Variant,
    latent: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    steps: int,
    cfg: float,
    sampler: str = "auto",
    seed: int = 0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    denoise: float = 1.0,
    dynamic_cfg: bool = False,
    image_latent: torch.Tensor | None = None,
    image_latent_scaling: Literal["diffusers", "sat"] = "diffusers",
    ofs: float | None = None,
    callback: ProgressCallback | None = None,
    cache_threshold: float = 0.0,
) -> torch.Tensor:
    """Denoise ``latent`` (raw ``[B, 16, T, h, w]``; zeros for text-to-video) and return raw latents.

    - ``positive`` / ``negative``: text embeddings ``[B or 1, L, D]``; guidance runs when ``cfg > 1``.
    - ``sampler``: a key of ``SAMPLERS`` or "auto" (the variant's reference solver).
    - noise: ``noise`` (``[B, 16, T or T_padded, h, w]``, unit Gaussian) or drawn from
      ``generator`` (default ``torch.Generator().manual_seed(seed)`` on CPU) in the reference
      layout; the same generator then feeds stochastic solvers.
    - ``denoise < 1``: start from ``latent`` noised to the strength's first timestep (video-to-video).
    - ``image_latent``: raw ``[B or 1, 16, 1, h, w]`` for image-to-video variants.
    - ``callback(step_index, total_steps, x0_raw)`` after every step; its exceptions propagate.
    - ``cache_threshold > 0``: step caching (``cache.CachedDenoiser``, TeaCache-like) skips the
      transformer on steps whose input changed less than this (accumulated relative L1); 0 = off.
      The first 40% of the steps always run and at most 3 in a row are skipped (``cache.StepCache``).
    """
    if latent.ndim != 5:
        raise ValueError(f"expected a latent [B, C, T, h, w], got shape {tuple(latent.shape)}")
    solver_name = variant.scheduler if sampler == "auto" else sampler
    if solver_name not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; one of {['auto', *SAMPLERS]}")
    if variant.is_i2v and image_latent is None:
        raise ValueError(f"variant {variant.name!r} is image-to-video and needs image_latent")
    if not variant.is_i2v and image_latent is not None:
        raise ValueError(f"variant {variant.name!r} is text/video-to-video; image_latent is not used")

    schedule = make_schedule(variant.scheduler_config(), steps, denoise)
    if len(schedule) == 0:
        log.info("denoise %.3f keeps no step of %d; returning the input latent", denoise, steps)
        return latent.clone()

    param = _param(model)
    device = param.device if param is not None else positive.device
    dtype = param.dtype if param is not None else positive.dtype
    sf = variant.scaling_factor
    b, _, frames, _, _ = latent.shape
    p_t = variant.transformer.patch_size_t or 1
    pad = (-frames) % p_t

    x_in = _pad_front(latent.to(device, torch.float32) * sf, pad)  # [B, C, T + pad, h, w]
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(seed)
    noise_sampler = frames_first_noise(generator)
    if noise is None:
        noise = noise_sampler(x_in)
    else:
        noise = noise.to(device, torch.float32)
        if noise.shape[2] == frames and pad:
            noise = _pad_front(noise, pad)  # [B, C, T + pad, h, w]
        if noise.shape != x_in.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} does not match the latent {tuple(x_in.shape)}")
    x = noise if denoise >= 1.0 else add_noise(x_in, noise, schedule.alpha(0))

    image_cond = None
    if image_latent is not None:
        scaled = _scale_image_latent(image_latent.to(device, torch.float32), variant, image_latent_scaling)
        # the reference zero-pads the image latent to the padded length (image at frame 0)
        image_cond = i2v_condition(_batch(scaled, b, "image_latent"), frames + pad)  # [B, C, T + pad, h, w]
    denoiser_cls, extra = Denoiser, {}
    if cache_threshold > 0:
        from .cache import CachedDenoiser  # cache.py builds on this module

        denoiser_cls, extra = CachedDenoiser, {"threshold": cache_threshold}
    denoiser = denoiser_cls(
        model,
        schedule,
        _batch(positive.to(device), b, "positive"),
        None if negative is None else _batch(negative.to(device), b, "negative"),
        cfg=cfg,
        dynamic_cfg=dynamic_cfg,
        image_cond=image_cond,
        ofs=ofs if ofs is not None else variant.ofs,
        dtype=dtype,
        **extra,
    )

    def on_step(i: int, _x: torch.Tensor, x0: torch.Tensor) -> None:
        if callback is not None:
            callback(i, len(schedule), x0[:, :, pad:] / sf)

    x = SAMPLERS[solver_name](denoiser, x, schedule, noise_sampler=noise_sampler, callback=on_step)
    if cache_threshold > 0:
        log.info(denoiser.report())
    return (x[:, :, pad:] / sf).to(latent.device)  # [B, C, T, h, w] raw
