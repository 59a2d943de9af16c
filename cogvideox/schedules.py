"""Noise schedules: the discrete variance-preserving schedule CogVideoX was trained with.

A schedule says *where* sampling goes (which timesteps, at which noise levels); the solvers in
``samplers.py`` say *how* to get there. Everything numeric is float64 so the tables equal
the reference tables bit for bit.

Notation (VP diffusion): ``x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps`` with ``a_t`` the
cumulative product of alphas ("alphas_cumprod"). The equivalent variance-exploding noise level
is ``sigma_t = sqrt((1 - a_t) / a_t)``; zero terminal SNR makes ``a_T = 0`` and ``sigma_T`` infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .configs import SchedulerConfig

SPACINGS = ("trailing", "leading", "linspace")


def scaled_linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Betas linear in sqrt-space (the Stable Diffusion / CogVideoX choice), float64 ``[T]``."""
    roots = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64)
    return roots**2


def shift_snr(alphas_cumprod: torch.Tensor, scale: float) -> torch.Tensor:
    """Divide the signal-to-noise ratio by ``scale``: ``a / (s + (1 - s) * a)``.

    With ``snr = a / (1 - a)`` the result has ``snr' = snr / s`` (CogVideoX uses s=3 for 2B).
    """
    return alphas_cumprod / (scale + (1 - scale) * alphas_cumprod)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and stretch ``sqrt(a)`` so the last step has zero SNR and the first is unchanged.

    Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.
    """
    root = alphas_cumprod.sqrt()
    first, last = root[0].item(), root[-1].item()
    root = (root - last) * (first / (first - last))
    return root**2


def alphas_cumprod(config: SchedulerConfig) -> torch.Tensor:
    """The training table ``a_t`` for ``t = 0..T-1`` (float64), as the reference builds it."""
    if config.beta_schedule == "scaled_linear":
        betas = scaled_linear_betas(config.num_train_timesteps, config.beta_start, config.beta_end)
    elif config.beta_schedule == "linear":
        betas = torch.linspace(
            config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float32
        ).double()
    else:
        raise ValueError(f"unsupported beta_schedule {config.beta_schedule!r} (scaled_linear or linear)")
    table = torch.cumprod(1.0 - betas, dim=0)
    table = shift_snr(table, config.snr_shift_scale)
    if config.rescale_betas_zero_snr:
        table = rescale_zero_terminal_snr(table)
    return table


def spaced_timesteps(config: SchedulerConfig, steps: int) -> torch.Tensor:
    """Descending integer timesteps ``[steps]`` for ``config.timestep_spacing``.

    trailing (Lin et al. 2023, Table 2) starts at ``T - 1`` so the first step sees pure noise;
    leading starts at 0 and counts up in ``T // steps``; linspace spreads over ``[0, T - 1]``.
    """
    total = config.num_train_timesteps
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be in [1, {total}], got {steps}")
    if config.timestep_spacing == "trailing":
        ratio = total / steps
        values = [round(total - k * ratio) - 1 for k in range(steps)]
    elif config.timestep_spacing == "leading":
        ratio = total // steps
        values = [k * ratio + config.steps_offset for k in reversed(range(steps))]
    elif config.timestep_spacing == "linspace":
        values = [round(k * (total - 1) / (steps - 1)) if steps > 1 else 0 for k in reversed(range(steps))]
    else:
        raise ValueError(f"unknown timestep_spacing {config.timestep_spacing!r}; one of {SPACINGS}")
    return torch.tensor(values, dtype=torch.int64)


def start_index(steps: int, denoise: float) -> int:
    """First step to run for a denoise strength in ``[0, 1]`` (video-to-video).

    ``int(steps * denoise)`` steps are kept at the end of the schedule; 1.0 runs all of them.
    """
    if not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise must be in [0, 1], got {denoise}")
    kept = min(int(steps * denoise), steps)
    return max(steps - kept, 0)


def to_sigmas(alphas: torch.Tensor) -> torch.Tensor:
    """VE noise levels ``sqrt((1 - a) / a)``; ``a = 0`` gives ``inf``, ``a = 1`` gives 0."""
    return ((1 - alphas) / alphas).sqrt()


@dataclass(frozen=True)
class Schedule:
    """The steps of one sampling run.

    ``timesteps[i]`` is what the model is told at step ``i``; ``table[t]`` its ``a_t``.
    ``ref_prev[i] = timesteps[i] - T // steps`` is where the reference CogVideoX schedulers move
    to (it differs from ``timesteps[i + 1]`` when ``T`` is not a multiple of the step count);
    a negative value means "the end", whose ``a`` is ``final_alpha``.
    """

    timesteps: torch.Tensor  # [n] int64
    ref_prev: torch.Tensor  # [n] int64
    table: torch.Tensor  # [T] float64
    final_alpha: float = 1.0

    def __len__(self) -> int:
        return int(self.timesteps.numel())

    def alpha(self, i: int) -> torch.Tensor:
        """``a`` at step ``i`` (float64 scalar)."""
        return self.table[self.timesteps[i]]

    def alpha_next(self, i: int) -> torch.Tensor:
        """``a`` of the next step in this schedule (the end: ``final_alpha``)."""
        if i + 1 < len(self):
            return self.table[self.timesteps[i + 1]]
        return torch.tensor(self.final_alpha, dtype=torch.float64)

    def alpha_ref_prev(self, i: int) -> torch.Tensor:
        """``a`` at the reference schedulers' target of step ``i``."""
        t = int(self.ref_prev[i])
        return self.table[t] if t >= 0 else torch.tensor(self.final_alpha, dtype=torch.float64)

    def is_ref_last(self, i: int) -> bool:
        return int(self.ref_prev[i]) < 0

    @property
    def alphas(self) -> torch.Tensor:
        """``[n + 1]`` float64: ``a`` of every step and of the end."""
        end = torch.tensor([self.final_alpha], dtype=torch.float64)
        return torch.cat([self.table[self.timesteps], end])

    @property
    def sigmas(self) -> torch.Tensor:
        """``[n + 1]`` float64 VE noise levels, descending, ending at 0 (the first may be inf)."""
        return to_sigmas(self.alphas)


def make_schedule(config: SchedulerConfig, steps: int, denoise: float = 1.0) -> Schedule:
    """Timesteps for ``steps`` steps, cut to the last ``int(steps * denoise)`` for denoise < 1."""
    table = alphas_cumprod(config)
    timesteps = spaced_timesteps(config, steps)
    ref_prev = timesteps - config.num_train_timesteps // steps
    first = start_index(steps, denoise)
    final = 1.0 if config.set_alpha_to_one else float(table[0])
    return Schedule(timesteps[first:], ref_prev[first:], table, final)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Forward process to a given ``a``: ``sqrt(a) * x0 + sqrt(1 - a) * noise``."""
    a = float(alpha)
    return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise
