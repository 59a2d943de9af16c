"""VideoCrafter's diffusion schedule: SD's betas, the ``use_scale`` ramp, DDIM's uniform steps.

Forward process (``LatentDiffusion.q_sample``): ``x_t = sqrt(abar_t) * s_t * x0 + sqrt(1 - abar_t) * eps``
with ``s_t = 1`` unless ``use_scale``. The betas are the same sqrt-space linear betas as Stable
Diffusion and CogVideoX (``cogvideox.schedules.scaled_linear_betas``); the reference keeps its
tables in float32, and so do these (as float64 tensors holding float32 values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._shared import scaled_linear_betas
from .configs import ScheduleConfig


def _as_reference_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float().double()


def alphas_cumprod(config: ScheduleConfig) -> torch.Tensor:
    """``abar_t`` for ``t = 0..T-1`` ``[T]``, rounded to float32 like the reference buffer."""
    betas = scaled_linear_betas(config.timesteps, config.linear_start, config.linear_end)
    return _as_reference_float32(torch.cumprod(1.0 - betas, dim=0))


def scale_table(config: ScheduleConfig) -> torch.Tensor:
    """``s_t`` for ``t = 0..T-1`` ``[T]``: ``scale_a -> scale_b`` over ``mid_step`` steps, then flat.

    Without ``fix_scale_bug`` the reference builds ``mid_step + T`` entries instead of ``T``;
    the first ``T`` (all that is ever indexed) are the same.
    """
    if not config.use_scale:
        return torch.ones(config.timesteps, dtype=torch.float64)
    ramp = torch.linspace(config.scale_a, config.scale_b, config.mid_step, dtype=torch.float64)
    flat = torch.full((config.timesteps - config.mid_step,), config.scale_b, dtype=torch.float64)
    return _as_reference_float32(torch.cat([ramp, flat]))


def ddim_timesteps(config: ScheduleConfig, steps: int) -> torch.Tensor:
    """The reference's "uniform" DDIM steps, ascending: ``0, c, 2c, ... (+1)`` with ``c = T // steps``.

    There are ``ceil(T / c)`` of them, which is more than ``steps`` when ``c`` does not divide ``T``
    (7 steps run 8), as in the reference.
    """
    if not 1 <= steps <= config.timesteps:
        raise ValueError(f"steps must be in [1, {config.timesteps}], got {steps}")
    ts = torch.arange(0, config.timesteps, config.timesteps // steps, dtype=torch.int64) + 1
    if int(ts[-1]) >= config.timesteps:  # the reference indexes past its table here (IndexError)
        raise ValueError(
            f"{steps} steps: the reference's uniform DDIM steps ({config.timesteps} // {steps} = "
            f"{config.timesteps // steps} apart, plus one) reach t={int(ts[-1])}, past its {config.timesteps}-entry "
            f"schedule; use {steps - 1} or {steps + 1} steps"
        )
    return ts


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-step tables of one DDIM run, in sampling order (noisiest first), float64.

    Step ``i`` tells the model ``timesteps[i]`` and moves from ``alpha[i]`` / ``scale[i]`` to
    ``alpha_prev[i]`` / ``scale_prev[i]`` with noise ``sigma[i]``. The last step ends at
    ``abar_0`` (not 1), like the reference.
    """

    timesteps: torch.Tensor  # [n] int64
    alpha: torch.Tensor  # [n]
    alpha_prev: torch.Tensor  # [n]
    scale: torch.Tensor  # [n]
    scale_prev: torch.Tensor  # [n]
    sigma: torch.Tensor  # [n]

    def __len__(self) -> int:
        return int(self.timesteps.numel())


def make_ddim_schedule(config: ScheduleConfig, steps: int, eta: float) -> DDIMSchedule:
    table, scales = alphas_cumprod(config), scale_table(config)
    ts = ddim_timesteps(config, steps)  # ascending
    alpha = table[ts]
    alpha_prev = torch.cat([table[:1], table[ts[:-1]]])
    scale = scales[ts]
    scale_prev = torch.cat([scales[:1], scales[ts[:-1]]])
    sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()
    flip = lambda t: t.flip(0)  # noqa: E731 - sampling order
    return DDIMSchedule(flip(ts), flip(alpha), flip(alpha_prev), flip(scale), flip(scale_prev), flip(sigma))


def add_noise(config: ScheduleConfig, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
    """``q_sample``: ``sqrt(abar_t) s_t x0 + sqrt(1 - abar_t) eps`` at integer timestep ``t``."""
    a = float(alphas_cumprod(config)[t])
    s = float(scale_table(config)[t])
    return (a**0.5 * s) * x0 + (1 - a) ** 0.5 * noise
