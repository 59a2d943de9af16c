"""Memory controls at run time: transformer block swap and automatic VAE tiling.

Block swap keeps ``count`` transformer blocks on an offload device (CPU RAM) and moves each to
the compute device just before its forward and back right after, through module hooks
(``register_forward_pre_hook`` / ``register_forward_hook``). The rest of the model lives on the
compute device. Peak device memory for the blocks drops to ``(num_layers - count + 1)`` blocks
at the price of one transfer per swapped block and call. On a CPU -> CPU pair it is a no-op that
still runs the hooks (what the tests check).

``auto_decode_tile`` picks a VAE tile size from the free memory of the device (None when the
untiled decode fits).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .configs import VAEConfig
from .quant import weight_bytes
from .vae_tiling import TileConfig, auto_tile

log = logging.getLogger(__name__)


def _move_tensors(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple):
        return tuple(_move_tensors(v, device) for v in value)
    if isinstance(value, list):
        return [_move_tensors(v, device) for v in value]
    return value


@dataclass
class BlockSwap:
    """Hooks of one block-swap setup; ``remove()`` undoes it (blocks stay where they are)."""

    compute_device: torch.device
    offload_device: torch.device
    blocks: list[nn.Module]
    handles: list[RemovableHandle] = field(default_factory=list)
    loads: int = 0  # how many times a block was brought to the compute device

    def _pre(self, module: nn.Module, args: tuple) -> tuple:
        module.to(self.compute_device, non_blocking=True)
        self.loads += 1
        return _move_tensors(args, self.compute_device)

    def _post(self, module: nn.Module, args: tuple, output):
        module.to(self.offload_device, non_blocking=True)
        return output

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for block in self.blocks:
            block.execution_device = None


def enable_block_swap(
    model: nn.Module,
    count: int,
    compute_device: torch.device | str,
    offload_device: torch.device | str = "cpu",
) -> BlockSwap:
    """Keep the first ``count`` blocks of a ``CogVideoXTransformer`` on ``offload_device``.

    Everything else is moved to ``compute_device``. Returns the ``BlockSwap`` (call ``remove()``
    to take the hooks off). ``count`` is clamped to the number of blocks.
    """
    blocks = getattr(model, "transformer_blocks", None)
    if blocks is None:
        raise TypeError(f"expected a CogVideoXTransformer (with transformer_blocks), got {type(model).__name__}")
    if count < 0:
        raise ValueError(f"block swap count must be >= 0, got {count}")
    compute, offload = torch.device(compute_device), torch.device(offload_device)
    swapped = list(blocks)[: min(count, len(blocks))]
    swapped_ids = {id(b) for b in swapped}
    for name, child in model.named_children():
        if name != "transformer_blocks":
            child.to(compute)
    for block in blocks:
        if id(block) not in swapped_ids:
            block.to(compute)
    for buffer_name, buffer in list(model.named_buffers(recurse=False)):
        setattr(model, buffer_name, buffer.to(compute))
    swap = BlockSwap(compute, offload, swapped)
    for block in swapped:
        block.to(offload)
        if offload.type == "cpu" and compute.type == "cuda":
            for p in block.parameters():
                p.data = p.data.pin_memory()  # faster, asynchronous host-to-device copies
        block.execution_device = compute
        swap.handles.append(block.register_forward_pre_hook(swap._pre))
        swap.handles.append(block.register_forward_hook(swap._post))
    log.info("block swap: %d of %d blocks on %s, computing on %s", len(swapped), len(blocks), offload, compute)
    return swap


def resident_bytes(model: nn.Module, count: int) -> int:
    """Bytes of weights ``enable_block_swap(model, count, ...)`` holds on the compute device at
    once: everything but the swapped blocks, plus the largest swapped block (the one running)."""
    blocks = list(getattr(model, "transformer_blocks", []))
    swapped = blocks[: max(0, min(count, len(blocks)))]
    sizes = [weight_bytes(b) for b in swapped]
    return weight_bytes(model) - sum(sizes) + max(sizes, default=0)


# ----------------------------------------------------------------------------- free memory
def free_memory(device: torch.device | str) -> int:
    """Bytes available for new tensors on ``device`` (CUDA: free device memory plus the
    allocator's reusable cache; CPU: ``MemAvailable`` of /proc/meminfo)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + reserved)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"cannot tell the free memory of {device}; pass a budget to vae_tiling.auto_tile")


def auto_decode_tile(
    config: VAEConfig,
    latent_shape: tuple[int, ...],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    reserve: float = 0.2,
    free_bytes: int | None = None,
) -> TileConfig | None:
    """Tile size for decoding latents of ``latent_shape`` ``[B, C, T, h, w]`` on ``device``.

    Uses ``(1 - reserve)`` of the free memory (``free_bytes`` overrides the measurement); None
    when the untiled decode is estimated to fit.
    """
    factor = 2 ** (len(config.block_out_channels) - 1)
    height, width = latent_shape[-2] * factor, latent_shape[-1] * factor
    free = free_memory(device) if free_bytes is None else free_bytes
    batch = latent_shape[0] if len(latent_shape) == 5 else 1
    budget = int(free * (1 - reserve)) // max(batch, 1)
    return auto_tile(config, height, width, budget, dtype=dtype)
