"""Convolutional blocks of the VideoCrafter U-Net (``lvdm/modules/networks/openaimodel3d.py``).

Frames travel folded into the batch, ``[(B T), C, H, W]``; the temporal convolution unfolds
them to ``[B, C, T, H, W]``. Submodule indices follow the reference (``in_layers.2`` is the
convolution, ``out_layers.3`` the zero-initialised one, ``temopral_conv`` keeps its spelling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm_fp32(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """The reference's ``GroupNormSpecific``: normalise in float32, return in ``x``'s dtype."""
    weight = None if norm.weight is None else norm.weight.to(x.device, torch.float32)
    bias = None if norm.bias is None else norm.bias.to(x.device, torch.float32)
    return F.group_norm(x.float(), norm.num_groups, weight, bias, norm.eps).to(x.dtype)


class TemporalConvBlock(nn.Module):
    """Four (GroupNorm, SiLU, Conv3d (3,1,1)) stages along time with a residual (from ModelScope)."""

    def __init__(self, channels: int, dropout: float = 0.0, num_groups: int = 32, operations=nn):
        super().__init__()

        def stage(with_dropout: bool) -> nn.Sequential:
            layers = [operations.GroupNorm(num_groups, channels), nn.SiLU()]
            if with_dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(operations.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*layers)

        self.conv1 = stage(False)
        self.conv2 = stage(True)
        self.conv3 = stage(True)
        self.conv4 = stage(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> same."""
        return self.conv4(self.conv3(self.conv2(self.conv1(x)))) + x


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, plus the time embedding, GroupNorm-SiLU-Conv, skip; then temporal conv."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        temporal_conv: bool = False,
        num_groups: int = 32,
        dropout: float = 0.0,
        operations=nn,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            operations.GroupNorm(num_groups, channels),
            nn.SiLU(),
            operations.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), operations.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            operations.GroupNorm(num_groups, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            operations.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else operations.Conv2d(channels, out_channels, 1)
        )
        self.temporal_conv = temporal_conv
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(
                out_channels, dropout=0.1, num_groups=num_groups, operations=operations
            )

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int) -> torch.Tensor:
        """x ``[(B T), C, H, W]``, emb ``[(B T), E]``."""
        h = self.in_layers[2](F.silu(group_norm_fp32(self.in_layers[0], x)))
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = group_norm_fp32(self.out_layers[0], h)
        h = self.out_layers[3](self.out_layers[2](F.silu(h)))
        h = self.skip_connection(x) + h
        if self.temporal_conv:
            h = rearrange(h, "(b t) c h w -> b c t h w", b=batch)
            h = rearrange(self.temopral_conv(h), "b c t h w -> (b t) c h w")
        return h


class Downsample(nn.Module):
    """Strided 3x3 convolution (``op``)."""

    def __init__(self, channels: int, operations=nn):
        super().__init__()
        self.op = operations.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x, then a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int, operations=nn):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
