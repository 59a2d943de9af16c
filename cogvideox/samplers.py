"""Solvers for the reverse diffusion, one signature for all (in the manner of k-diffusion).

Every solver is ``solver(model, x, schedule, *, noise_sampler=None, callback=None) -> x`` where

- ``model(x, i) -> x0``: the *denoiser* at step ``i`` of ``schedule`` (guidance, the
  v-prediction conversion, and any step caching live behind this call; a solver never sees
  the network, so a caching denoiser may skip it without a solver changing);
- ``x``: the VP-space latent at ``schedule.alpha(0)`` (pure noise when the schedule starts at
  zero SNR), any shape;
- ``noise_sampler(x) -> noise like x``: fresh Gaussian noise for stochastic solvers
  (default: ``torch.randn_like``); the pipeline passes one that reproduces the reference draws;
- ``callback(i, x, x0)``: after step ``i`` with the new ``x`` and that step's ``x0``; whatever it
  raises propagates (interrupts).

Coefficients are computed in float64 and applied as Python floats (no float64 tensors reach
the latent's device). The state is kept in VP space (``x = sqrt(a) x0 + sqrt(1 - a) eps``) and the step formulas
are written with ``alpha = sqrt(a)`` and ``sigma = sqrt(1 - a)``, so the infinite VE sigma of a
zero-terminal-SNR first step is its exact limit, not a clamp.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from .schedules import Schedule

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
NoiseSampler = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def randn_noise(generator: torch.Generator | None = None) -> NoiseSampler:
    """Noise drawn with ``generator`` on its device, in ``x``'s shape and dtype, moved to ``x``."""

    def draw(x: torch.Tensor) -> torch.Tensor:
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)

    return draw


def frames_first_noise(generator: torch.Generator | None = None) -> NoiseSampler:
    """Noise for ``[B, C, T, H, W]`` drawn as ``[B, T, C, H, W]`` (the reference pipelines' layout).

    With the same seeded generator this reproduces the reference draws number for number.
    """
    draw = randn_noise(generator)

    def draw_video(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return draw(x)
        noise = draw(rearrange(x, "b c t h w -> b t c h w"))  # [B, T, C, H, W]
        return rearrange(noise, "b t c h w -> b c t h w")  # [B, C, T, H, W]

    return draw_video


def _sqrt(a: torch.Tensor) -> torch.Tensor:
    return a.sqrt()


def _half_log_snr(a: torch.Tensor) -> torch.Tensor:
    """``lambda = log(alpha / sigma)``; -inf at zero SNR, +inf at ``a = 1``."""
    return (a / (1 - a)).sqrt().log()


def _ddim_move(x: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, a_next: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM / first-order ODE move from ``a`` to ``a_next`` given ``x0``."""
    ratio = ((1 - a_next) / (1 - a)).sqrt()
    return float(ratio) * x + float(_sqrt(a_next) - _sqrt(a) * ratio) * x0


def sample_ddim(
    model: Denoiser,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0), the reference sampler of CogVideoX-2B.

    Song, Meng, Ermon 2020, "Denoising Diffusion Implicit Models", eq. 12 with sigma = 0.
    Moves to the reference target ``t - T // steps`` exactly as CogVideoXDDIMScheduler.
    """
    for i in range(len(schedule)):
        x0 = model(x, i)
        x = _ddim_move(x, x0, schedule.alpha(i), schedule.alpha_ref_prev(i))
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_cogvideox_dpm(
    model: Denoiser,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """CogVideoX's DPM step: stochastic DPM-Solver++(2M) with a midpoint correction, eta = 1.

    Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models" (2M, SDE form). The reference sampler of CogVideoX-5B and 1.5. Like
    CogVideoXDPMScheduler it draws one noise every step and a second one on every second-order
    step (the first is then unused), so a seeded generator reproduces the reference run.
    """
    noise_sampler = noise_sampler or randn_noise()
    old_x0 = None
    for i in range(len(schedule)):
        x0 = model(x, i)
        a, a_next = schedule.alpha(i), schedule.alpha_ref_prev(i)
        lam, lam_next = _half_log_snr(a), _half_log_snr(a_next)
        h = lam_next - lam
        keep = float(((1 - a_next) / (1 - a)).sqrt() * (-h).exp())
        toward = float(-torch.expm1(-2 * h) * _sqrt(a_next))  # alpha_next * (1 - e^{-2h})
        spread = float((1 - a_next).sqrt() * (1 - (-2 * h).exp()).sqrt())
        x_next = keep * x + toward * x0 + spread * noise_sampler(x)
        if old_x0 is not None and not schedule.is_ref_last(i):
            h_last = lam - _half_log_snr(schedule.alpha(i - 1))
            half_inv_r = float(1 / (2 * (h_last / h)))
            x0_d = (1 + half_inv_r) * x0 - half_inv_r * old_x0
            x_next = keep * x + toward * x0_d + spread * noise_sampler(x)
        x, old_x0 = x_next, x0
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler on the probability-flow ODE in sigma space, ``dx/dsigma = (x - x0) / sigma``.

    Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
    Algorithm 1 without churn. In VE variables ``x_ve = x / alpha`` one step is
    ``x_ve' = x0 + (sigma'/sigma) (x_ve - x0)``; written back in VP space it is well defined
    for ``sigma = inf`` (it becomes ``x' = sqrt(1 - a') x + sqrt(a') x0``). Steps go to the next
    timestep of the schedule (then to 0), unlike the reference DDIM target.
    """
    for i in range(len(schedule)):
        x0 = model(x, i)
        x = _ddim_move(x, x0, schedule.alpha(i), schedule.alpha_next(i))
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), deterministic multistep second order in log-SNR.

    Lu et al. 2022, "DPM-Solver++" Algorithm 2 (as in k-diffusion's ``sample_dpmpp_2m``).
    ``x' = (sigma'/sigma) x + alpha' (1 - e^{-h}) D`` with ``D = (1 + 1/2r) x0 - 1/2r x0_prev``;
    first-order on the first step (``h`` is infinite from zero SNR) and on the last step.
    """
    old_x0 = None
    for i in range(len(schedule)):
        x0 = model(x, i)
        a, a_next = schedule.alpha(i), schedule.alpha_next(i)
        last = i + 1 == len(schedule) and float(a_next) >= 1.0
        if old_x0 is None or last:
            x_next = _ddim_move(x, x0, a, a_next)
        else:
            lam, lam_next = _half_log_snr(a), _half_log_snr(a_next)
            h = lam_next - lam
            h_last = lam - _half_log_snr(schedule.alpha(i - 1))
            half_inv_r = float(h / (2 * h_last))
            x0_d = (1 + half_inv_r) * x0 - half_inv_r * old_x0
            ratio = float(((1 - a_next) / (1 - a)).sqrt())
            x_next = ratio * x - float(_sqrt(a_next) * torch.expm1(-h)) * x0_d
        x, old_x0 = x_next, x0
        if callback is not None:
            callback(i, x, x0)
    return x


Solver = Callable[..., torch.Tensor]

SAMPLERS: dict[str, Solver] = {
    "ddim": sample_ddim,
    "dpm": sample_cogvideox_dpm,
    "euler": sample_euler,
    "dpmpp_2m": sample_dpmpp_2m,
}
