"""The reference sampler: DDIM with eta, classifier-free guidance and the ``use_scale`` rescaling.

One step (``lvdm/models/samplers/ddim.py``, Song et al. 2020 eq. 12), with ``e`` the guided
noise prediction ``e_u + w (e_c - e_u)``::

    x0     = (x - sqrt(1 - a) e) / sqrt(a) / s
    x_prev = sqrt(a_prev) s_prev x0 + sqrt(1 - a_prev - sigma^2) e + sigma z

The reference draws ``z`` at every step, even when ``sigma`` is 0 (eta 0), from the global
generator in the latent's shape ``[B, C, T, H, W]``; ``noise_sampler`` (default: fresh
``torch.randn``) is called the same way, so a seeded generator reproduces the reference draws.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._shared import NoiseSampler, combine, randn_noise
from .schedule import DDIMSchedule

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, timesteps [B]) -> eps
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def ddim_step(
    x: torch.Tensor, eps: torch.Tensor, schedule: DDIMSchedule, i: int, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM move of step ``i``; returns ``(x_prev, x0)`` (coefficients in float64)."""
    a, a_prev = schedule.alpha[i], schedule.alpha_prev[i]
    s, s_prev, sigma = schedule.scale[i], schedule.scale_prev[i], schedule.sigma[i]
    x0 = (x - float((1 - a).sqrt()) * eps) * float(1 / (a.sqrt() * s))
    direction = float((1 - a_prev - sigma**2).sqrt()) * eps
    x_prev = float(a_prev.sqrt() * s_prev) * x0 + direction + float(sigma) * noise
    return x_prev, x0


def sample_ddim(
    predict: NoisePredictor,
    x: torch.Tensor,
    schedule: DDIMSchedule,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run every step of ``schedule`` from ``x`` (pure noise at its first timestep)."""
    noise_sampler = noise_sampler or randn_noise()
    for i in range(len(schedule)):
        t = schedule.timesteps[i].expand(x.shape[0]).to(x.device)
        eps = predict(x, t)
        x, x0 = ddim_step(x, eps, schedule, i, noise_sampler(x))
        if callback is not None:
            callback(i, x, x0)
    return x


def guided_predictor(
    unet: Callable[..., torch.Tensor],
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    cfg: float,
    fps: torch.Tensor | int | None = None,
) -> NoisePredictor:
    """``e_u + cfg (e_c - e_u)`` from ``unet(x, t, context, fps)``; one batched call ``[uncond, cond]``.

    Guidance runs when ``cfg != 1`` and a negative context is given (the reference's rule).
    """

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if negative is None or cfg == 1.0:
            return unet(x, t, positive, fps).float()
        f = torch.cat([fps, fps]) if torch.is_tensor(fps) else fps
        both = unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([negative, positive]), f).float()
        uncond, cond = both.chunk(2)
        return combine(uncond, cond, cfg)

    return predict
