"""Classifier-free guidance (Ho & Salimans 2022) and CogVideoX's dynamic guidance scale."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def dynamic_scale(cfg: float, timestep: float, num_steps: int) -> float:
    """CogVideoX's dynamic CFG scale, as the reference pipelines compute it.

    ``w_t = 1 + w * (1 - cos(pi * ((N - t) / N) ** 5)) / 2`` where ``t`` is the *timestep value*
    (0..999) and ``N`` the number of steps being run; the two live on different scales, which
    is what the reference does and what users of it compare against.
    """
    ratio = (num_steps - float(timestep)) / num_steps
    return 1 + cfg * (1 - math.cos(math.pi * ratio**5.0)) / 2


def guidance_scale(cfg: float, *, dynamic: bool, timestep: float, num_steps: int) -> float:
    """The scale used at one step: ``cfg`` or its dynamic form."""
    return dynamic_scale(cfg, timestep, num_steps) if dynamic else cfg


def combine(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def guided(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    scale: float,
    uses_cfg: bool,
) -> torch.Tensor:
    """Run ``forward(x, context)`` with guidance, uncond and cond batched in one call.

    ``uses_cfg`` is decided once per run (the reference: ``cfg > 1``) so a dynamic scale that
    dips to 1 still runs the same batch. The batch is ``[uncond, cond]`` like the reference.
    Returns float32.
    """
    if not uses_cfg:
        return forward(x, positive).float()
    if negative is None:
        raise ValueError("guidance needs negative embeddings (encode an empty prompt for the usual CFG)")
    both = forward(torch.cat([x, x]), torch.cat([negative, positive])).float()
    uncond, cond = both.chunk(2)
    return combine(uncond, cond, scale)
