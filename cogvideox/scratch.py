"""Buffers handed from one transformer block to the next within a forward pass.

Why: on CPU a fresh tensor of more than a few MB comes from ``mmap``; the kernel faults in and
zeroes its pages on first touch, and ``free`` unmaps them again. Every block allocates the same
dozen activation-sized tensors (normalised stream, fused q/k/v, normalised q and k, attention
and feed-forward outputs), so a forward at 5B proportions spent about a tenth of its time in
page faults (~160k per step of the benchmark's 4-block model, 0.4 s of system time in 4.2 s).
A ``Scratch`` keeps the buffers that a block is done with and hands them to the next block:
only the first block allocates (besides the attention kernel and LayerNorm, which have no
``out=`` kernels).

Lifetime: one pass over the blocks (``CogVideoXTransformer.run_all_blocks``); nothing is held
between calls. At most ``keep`` free buffers per (size, dtype, device), so a deep model holds
no more than a shallow one. ``Scratch(enabled=False)`` (``NO_SCRATCH``) allocates plainly and
keeps nothing: the path with autograd and compiled blocks.
"""

from __future__ import annotations

import math

import torch

_Key = tuple[int, torch.dtype, torch.device]


class Scratch:
    def __init__(self, enabled: bool = True, keep: int = 4):
        self.enabled = enabled
        self.keep = keep
        self._free: dict[_Key, list[torch.Tensor]] = {}

    def empty(self, *shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of ``shape``: a handed-back buffer of that size when there is one."""
        free = self._free.get((math.prod(shape), dtype, torch.device(device)))
        if free:
            return free.pop().view(shape)
        return torch.empty(shape, dtype=dtype, device=device)

    def give(self, *tensors: torch.Tensor) -> None:
        """Hand back tensors the caller is done with (no view of them may be used afterwards).

        Only whole, contiguous tensors are kept (a view of a bigger buffer is ignored), each once.
        """
        if not self.enabled:
            return
        for t in tensors:
            if not t.is_contiguous() or t.storage_offset() or t.untyped_storage().nbytes() != t.nbytes:
                continue
            free = self._free.setdefault((t.numel(), t.dtype, t.device), [])
            if len(free) < self.keep and all(f.data_ptr() != t.data_ptr() for f in free):
                free.append(t)

    def held_bytes(self) -> int:
        """Bytes of the free buffers held now."""
        return sum(t.nbytes for free in self._free.values() for t in free)


NO_SCRATCH = Scratch(enabled=False)
