"""The I2V image projection (``image_proj_model``): a Perceiver resampler.

``num_queries`` learned latents attend (with themselves) to the projected CLIP image tokens over
``depth`` layers of attention + feed-forward, then are projected to the U-Net's context width.
Upstream: ``lvdm/modules/encoders/ip_resampler.py`` (from OpenFlamingo / IP-Adapter); parameter
names are its own (``latents``, ``proj_in``, ``layers.{i}.0.to_kv``, ``layers.{i}.1.3``...).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from .configs import ResamplerConfig


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int, operations=nn):
        super().__init__()
        inner = dim_head * heads
        self.dim_head, self.heads = dim_head, heads
        self.norm1 = operations.LayerNorm(dim)
        self.norm2 = operations.LayerNorm(dim)
        self.to_q = operations.Linear(dim, inner, bias=False)
        self.to_kv = operations.Linear(dim, 2 * inner, bias=False)
        self.to_out = operations.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x ``[B, N, dim]`` image features, latents ``[B, Q, dim]`` -> ``[B, Q, dim]``."""
        x, latents = self.norm1(x), self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)  # keys over [N + Q]
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))  # split over q and k, as the reference
        weight = (q * scale) @ (k * scale).transpose(-2, -1)  # [B, h, Q, N + Q]
        weight = weight.float().softmax(dim=-1).to(weight.dtype)
        return self.to_out(rearrange(weight @ v, "b h q d -> b q (h d)"))


def _feed_forward(dim: int, mult: int, operations) -> nn.Sequential:
    return nn.Sequential(
        operations.LayerNorm(dim),
        operations.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        operations.Linear(dim * mult, dim, bias=False),
    )


class Resampler(nn.Module):
    def __init__(self, config: ResamplerConfig, operations=nn):
        super().__init__()
        c = self.config = config
        self.latents = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim**0.5)
        self.proj_in = operations.Linear(c.embedding_dim, c.dim)
        self.proj_out = operations.Linear(c.dim, c.output_dim)
        self.norm_out = operations.LayerNorm(c.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(c.dim, c.dim_head, c.heads, operations=operations),
                    _feed_forward(c.dim, c.ff_mult, operations),
                ]
            )
            for _ in range(c.depth)
        )

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """CLIP image tokens ``[B, N, embedding_dim]`` -> context tokens ``[B, num_queries, output_dim]``."""
        x = self.proj_in(image_tokens.to(self.proj_in.weight.dtype))
        latents = self.latents.to(x).expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
