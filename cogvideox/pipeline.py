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
from .conditioning import fun_condition, i2v_condition
from .configs import Variant
from .ops import resident
from .samplers import SAMPLERS, frames_first_noise
from .schedules import Schedule, add_noise, make_schedule

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, torch.Tensor], None]


def _placement(model, fallback: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and dtype the network computes in: those of its first resident layer's weights
    (a partially loaded model's streamed layers wait on another device), its ``compute_dtype``
    when set (weights stored in another dtype), else ``fallback``'s."""
    if not isinstance(model, nn.Module):
        return fallback.device, fallback.dtype
    dtype = getattr(model, "compute_dtype", None)
    for module in model.modules():
        param = next(module.parameters(recurse=False), None)
        if param is None:
            continue
        dtype = dtype or param.dtype
        if resident(module):
            return param.device, dtype
    return fallback.device, dtype or fallback.dtype


class Denoiser:
    """``denoiser(x, i) -> x0``: one guided network call at step ``i`` and the x0 it implies.

    ``model(x[B,C,T,H,W], timestep[B], context[B,L,D], ofs=None) -> v`` is any callable with the
    transformer's signature. ``x`` is scaled VP-space float32; ``image_cond`` (the extra input
    channels: the I2V image latent, the Fun InP mask + masked-video latent or the Fun control
    latent; scaled, already padded to ``x``'s frames) is concatenated on channels after ``x``.
    To cache steps, subclass and override ``velocity`` (it may return a stored result instead of calling ``forward``).
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
                f"(timestep {int(self.schedule.timesteps[i])}); in float16 CogVideoX overflows (load the "
                "transformer in bfloat16 or float32), otherwise check the weights for NaN/inf"
            )
        a = self.schedule.alpha(i)
        return float(a.sqrt()) * x - float((1 - a).sqrt()) * v


def pad_front(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Prepend copies of the first ``pad`` frames: ``[B, C, T, h, w] -> [B, C, T + pad, h, w]``."""
    return torch.cat([x[:, :, :pad], x], dim=2) if pad else x


def scale_image_latent(image_latent: torch.Tensor, variant: Variant, mode: str) -> torch.Tensor:
    """A raw image-to-video latent in the model's input space, as the reference pipelines scale it.

    1.0 models multiply by the scaling factor; 1.5 (``invert_scale_latents``) divides by it
    ("diffusers") or feeds the raw latent ("sat", the original SAT code).
    """
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


def _fun_cond(variant: Variant, latent, mask, shape, device, pad: int) -> torch.Tensor:
    """The scaled Fun channels ``[B, C, T + pad, h, w]`` (front-padded like the noisy latent)."""
    b, _, frames, h, w = shape
    tensors = {"concat_latent": latent, "concat_mask": mask}
    for name, t in tensors.items():
        if t is not None and (t.ndim != 5 or t.shape[2:] != (frames, h, w)):
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}; it must cover the latent's {frames} frames of {h}x{w} "
                "(make it with the same width, height and frames as the latent)"
            )
    tensors = {k: None if t is None else _batch(t.to(device, torch.float32), b, k) for k, t in tensors.items()}
    cond = fun_condition(variant.fun, variant.scaling_factor, tensors["concat_latent"], tensors["concat_mask"])
    if cond.shape[1] != variant.condition_channels:
        raise ValueError(
            f"the Fun conditioning has {cond.shape[1]} channels, the model takes {variant.condition_channels}"
        )
    return pad_front(cond, pad)  # [B, C, T + pad, h, w]


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
    concat_latent: torch.Tensor | None = None,
    concat_mask: torch.Tensor | None = None,
    ofs: float | None = None,
    callback: ProgressCallback | None = None,
    cache_threshold: float = 0.0,
    cache_plan: str = "adaptive",
) -> torch.Tensor:
    """Denoise ``latent`` (raw ``[B, 16, T, h, w]``; zeros for text-to-video) and return raw latents.

    - ``positive`` / ``negative``: text embeddings ``[B or 1, L, D]``; guidance runs when ``cfg > 1``.
    - ``sampler``: a key of ``SAMPLERS`` or "auto" (the variant's reference solver).
    - noise: ``noise`` (``[B, 16, T or T_padded, h, w]``, unit Gaussian) or drawn from
      ``generator`` (default ``torch.Generator().manual_seed(seed)`` on CPU) in the reference
      layout; the same generator then feeds stochastic solvers.
    - ``denoise < 1``: start from ``latent`` noised to the strength's first timestep (video-to-video).
    - ``image_latent``: raw ``[B or 1, 16, 1, h, w]`` for image-to-video variants.
    - ``concat_latent`` / ``concat_mask``: CogVideoX-Fun conditioning on the latent grid
      ``[B or 1, C, T, h, w]``: InP the raw masked-video latent (16) and the mask (1, 1 = unknown;
      ``conditioning.inpaint_mask_latent``; a zero latent and a mask of ones for text-to-video),
      Control the raw control-video latent alone. The network gets ``(1 - mask) * sf`` and
      ``latent * sf``, as the reference does (``conditioning.fun_condition``).
    - ``callback(step_index, total_steps, x0_raw)`` after every step; its exceptions propagate.
    - ``cache_threshold > 0``: step caching (``cache.CachedDenoiser``, TeaCache-like) skips the
      transformer on steps whose input changed less than this (accumulated relative L1); 0 = off.
      The first 40% of the steps always run and at most 3 in a row are skipped (``cache.StepCache``).
      ``cache_plan="calibrated"`` replaces that rule with the skip plan calibrated for the step
      count (``cache.CALIBRATED_PHASES``).
    """
    if latent.ndim != 5:
        raise ValueError(f"expected a latent [B, C, T, h, w], got shape {tuple(latent.shape)}")
    solver_name = variant.scheduler if sampler == "auto" else sampler
    if solver_name not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; one of {['auto', *SAMPLERS]}")
    if variant.is_i2v and image_latent is None:
        raise ValueError(f"variant {variant.name!r} is image-to-video and needs image_latent")
    if not variant.is_i2v and image_latent is not None:
        raise ValueError(f"variant {variant.name!r} is not image-to-video; image_latent is not used")
    if variant.fun is None and (concat_latent is not None or concat_mask is not None):
        raise ValueError(f"variant {variant.name!r} is not a CogVideoX-Fun model; concat_latent/mask are not used")

    schedule = make_schedule(variant.scheduler_config(), steps, denoise)
    if len(schedule) == 0:
        log.info("denoise %.3f keeps no step of %d; returning the input latent", denoise, steps)
        return latent.clone()

    device, dtype = _placement(model, positive)
    sf = variant.scaling_factor
    b, _, frames, _, _ = latent.shape
    p_t = variant.transformer.patch_size_t or 1
    pad = (-frames) % p_t

    x_in = pad_front(latent.to(device, torch.float32) * sf, pad)  # [B, C, T + pad, h, w]
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(seed)
    noise_sampler = frames_first_noise(generator)
    if noise is None:
        noise = noise_sampler(x_in)
    else:
        noise = noise.to(device, torch.float32)
        if noise.shape[2] == frames and pad:
            noise = pad_front(noise, pad)  # [B, C, T + pad, h, w]
        if noise.shape != x_in.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} does not match the latent {tuple(x_in.shape)}")
    x = noise if denoise >= 1.0 else add_noise(x_in, noise, schedule.alpha(0))

    image_cond = None
    if image_latent is not None:
        scaled = scale_image_latent(image_latent.to(device, torch.float32), variant, image_latent_scaling)
        # the reference zero-pads the image latent to the padded length (image at frame 0)
        image = _batch(scaled, b, "the image conditioning")
        image_cond = i2v_condition(image, frames + pad)  # [B, C, T + pad, h, w]
    if variant.fun is not None:
        image_cond = _fun_cond(variant, concat_latent, concat_mask, latent.shape, device, pad)
    denoiser_cls, extra = Denoiser, {}
    if cache_threshold > 0:
        from .cache import CachedDenoiser  # cache.py builds on this module

        denoiser_cls, extra = CachedDenoiser, {"threshold": cache_threshold, "plan": cache_plan}
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
