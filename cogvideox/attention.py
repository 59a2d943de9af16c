"""Joint text-video self-attention and the feed-forward network of a CogVideoX block.

Text tokens come first in the joint sequence; rotary embeddings (when given) rotate only the
video tokens. Parameter names follow diffusers (``to_q``, ``norm_q``, ``to_out.0``, ``net.0.proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .embeddings import _activation
from .rope import apply_rotary


def _layer_norm_fp32(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm evaluated in float32 (weights upcast on the fly); returns float32."""
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)


class JointAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool, qk_eps: float = 1e-6):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(dim, inner, bias=bias)
        self.to_v = nn.Linear(dim, inner, bias=bias)
        self.norm_q = nn.LayerNorm(head_dim, eps=qk_eps)
        self.norm_k = nn.LayerNorm(head_dim, eps=qk_eps)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=True), nn.Dropout(0.0)])

    def forward(
        self, seq: torch.Tensor, text_len: int, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """``seq[B, L+N, dim]`` (text first) -> ``[B, L+N, dim]`` in the projection dtype."""
        seq = seq.to(self.to_q.weight.dtype)
        q = rearrange(self.to_q(seq), "b s (h d) -> b h s d", h=self.heads)  # [B, heads, S, d]
        k = rearrange(self.to_k(seq), "b s (h d) -> b h s d", h=self.heads)  # [B, heads, S, d]
        v = rearrange(self.to_v(seq), "b s (h d) -> b h s d", h=self.heads)  # [B, heads, S, d]
        q = _layer_norm_fp32(self.norm_q, q)
        k = _layer_norm_fp32(self.norm_k, k)
        if rope is not None:
            cos, sin = rope
            q = torch.cat([q[:, :, :text_len], apply_rotary(q[:, :, text_len:], cos, sin)], dim=2)
            k = torch.cat([k[:, :, :text_len], apply_rotary(k[:, :, text_len:], cos, sin)], dim=2)
        q, k = q.to(v.dtype), k.to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)  # [B, heads, S, d]
        out = rearrange(out, "b h s d -> b s (h d)")  # [B, S, heads*d]
        out = self.to_out[0](out)
        return self.to_out[1](out)


class _ProjAct(nn.Module):
    """``act(proj(x))``: the first layer of the feed-forward network (named ``net.0``)."""

    def __init__(self, dim_in: int, dim_out: int, act: str):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, act: str, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        hidden = dim * mult
        self.net = nn.ModuleList(
            [_ProjAct(dim, hidden, act), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.net[0].proj.weight.dtype)
        for layer in self.net:
            x = layer(x)
        return x
