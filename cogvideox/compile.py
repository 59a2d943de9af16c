"""Optional ``torch.compile`` of the transformer blocks.

Each block is compiled on its own (``nn.Module.compile``, in place): the blocks are identical,
so one graph serves them all, while the embedding, the step-cache hook and block swap stay
eager. Compilation happens on the first call (slow); later calls with the same shapes reuse it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def is_compiling() -> bool:
    """Whether ``torch.compile`` is tracing now (always False on torch < 2.3, which has no public check)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check is not None and check())


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """Compile every block of ``model.transformer_blocks`` in place; returns ``model``.

    ``compile_kwargs`` go to ``torch.compile`` (e.g. ``mode="max-autotune-no-cudagraphs"``,
    ``backend="inductor"``, ``dynamic=False``).
    """
    blocks = getattr(model, "transformer_blocks", None)
    if blocks is None:
        raise TypeError(f"expected a CogVideoXTransformer (with transformer_blocks), got {type(model).__name__}")
    for block in blocks:
        block.compile(**compile_kwargs)
    log.info("compiled %d transformer blocks (%s)", len(blocks), compile_kwargs or "defaults")
    return model
