"""Attention layers of the VideoCrafter U-Net (``lvdm/modules/attention.py``).

- ``CrossAttention``: multi-head attention; optionally relative temporal positions (learned
  key and value tables indexed by the clipped frame distance) and the image cross-attention of
  the I2V model (``to_k_ip`` / ``to_v_ip`` over the context tokens after the first 77 text tokens,
  the two attention outputs added).
- ``BasicTransformerBlock``: self-attention, cross-attention, GEGLU feed-forward, pre-norm.
- ``SpatialTransformer`` over ``[(B T), C, H, W]`` and ``TemporalTransformer`` over
  ``[B, C, T, H, W]`` (attention along T for every pixel).

Layers are built from ``operations`` (``torch.nn`` by default; ComfyUI passes ``comfy.ops`` classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class RelativePosition(nn.Module):
    """A learned table ``[2 * max + 1, units]`` indexed by the clipped distance ``k - q``."""

    def __init__(self, num_units: int, max_relative_position: int):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, num_units))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length_q: int, length_k: int) -> torch.Tensor:
        """``[length_q, length_k, units]``."""
        device = self.embeddings_table.device
        distance = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        index = distance.clamp(-self.max_relative_position, self.max_relative_position) + self.max_relative_position
        return self.embeddings_table[index]


class CrossAttention(nn.Module):
    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        relative_position: bool = False,
        temporal_length: int | None = None,
        img_cross_attention: bool = False,
        text_context_len: int = 77,
        operations=nn,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.to_q = operations.Linear(query_dim, inner, bias=False)
        self.to_k = operations.Linear(context_dim, inner, bias=False)
        self.to_v = operations.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(operations.Linear(inner, query_dim), nn.Dropout(dropout))
        self.img_cross_attention = img_cross_attention
        self.text_context_len = text_context_len
        self.image_cross_attention_scale = 1.0
        if img_cross_attention:
            self.to_k_ip = operations.Linear(context_dim, inner, bias=False)
            self.to_v_ip = operations.Linear(context_dim, inner, bias=False)
        self.relative_position = relative_position
        if relative_position:
            if temporal_length is None:
                raise ValueError("relative positions need temporal_length")
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.heads)  # [B, heads, N, d]

    def _relative_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention with relative-position terms on the logits and on the output (q, k, v ``[B, h, N, d]``)."""
        n_q, n_k = q.shape[2], k.shape[2]
        rel_k = self.relative_position_k(n_q, n_k).to(q.device, q.dtype)  # [Nq, Nk, d]
        rel_v = self.relative_position_v(n_q, n_k).to(q.device, q.dtype)  # [Nq, Nk, d]
        logits = torch.einsum("bhid,bhjd->bhij", q, k) + torch.einsum("bhid,ijd->bhij", q, rel_k)
        probs = (logits * self.scale).softmax(dim=-1)  # [B, h, Nq, Nk]
        return torch.einsum("bhij,bhjd->bhid", probs, v) + torch.einsum("bhij,ijd->bhid", probs, rel_v)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, N, query_dim]``, context ``[B, L, context_dim]`` (None: self-attention)."""
        context = x if context is None else context
        image = None
        if self.img_cross_attention:
            context, image = context[:, : self.text_context_len], context[:, self.text_context_len :]
        q, k, v = (self._heads(t) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        if self.relative_position:
            out = self._relative_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [B, h, N, d]
        if image is not None:
            k_ip, v_ip = self._heads(self.to_k_ip(image)), self._heads(self.to_v_ip(image))
            out_ip = F.scaled_dot_product_attention(q, k_ip, v_ip, scale=self.scale)
            out = out + self.image_cross_attention_scale * out_ip
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, operations=nn):
        super().__init__()
        self.proj = operations.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x wide (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0, operations=nn):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(
            GEGLU(dim, inner, operations=operations), nn.Dropout(dropout), operations.Linear(inner, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """``x += attn1(norm1 x)``; ``x += attn2(norm2 x, context)``; ``x += ff(norm3 x)``.

    In temporal blocks (``context_dim=None``) both attentions are self-attentions.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        img_cross_attention: bool = False,
        text_context_len: int = 77,
        relative_position: bool = False,
        temporal_length: int | None = None,
        operations=nn,
    ):
        super().__init__()
        rel = dict(relative_position=relative_position, temporal_length=temporal_length)
        self.attn1 = CrossAttention(dim, None, heads, dim_head, dropout, operations=operations, **rel)
        self.ff = FeedForward(dim, dropout=dropout, operations=operations)
        self.attn2 = CrossAttention(
            dim,
            context_dim,
            heads,
            dim_head,
            dropout,
            img_cross_attention=img_cross_attention,
            text_context_len=text_context_len,
            operations=operations,
            **rel,
        )
        self.norm1 = operations.LayerNorm(dim)
        self.norm2 = operations.LayerNorm(dim)
        self.norm3 = operations.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of each frame: ``[(B T), C, H, W]`` in and out (residual)."""

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        context_dim: int | None = None,
        use_linear: bool = True,
        img_cross_attention: bool = False,
        text_context_len: int = 77,
        num_groups: int = 32,
        dropout: float = 0.0,
        operations=nn,
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = operations.GroupNorm(num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = operations.Linear(channels, inner) if use_linear else operations.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                heads,
                dim_head,
                context_dim,
                dropout,
                img_cross_attention=img_cross_attention,
                text_context_len=text_context_len,
                operations=operations,
            )
            for _ in range(depth)
        )
        self.proj_out = operations.Linear(inner, channels) if use_linear else operations.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        _, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "n c h w -> n (h w) c")  # [(B T), H*W, C]
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = rearrange(x, "n (h w) c -> n c h w", h=h, w=w)  # [(B T), C, H, W]
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TemporalTransformer(nn.Module):
    """Self-attention along time for every pixel: ``[B, C, T, H, W]`` in and out (residual).

    ``use_linear=False`` (``init_attn``) projects with 1x1 ``Conv1d`` layers, as the reference.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        use_linear: bool = False,
        relative_position: bool = False,
        temporal_length: int | None = None,
        num_groups: int = 32,
        dropout: float = 0.0,
        operations=nn,
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = operations.GroupNorm(num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = operations.Linear(channels, inner) if use_linear else operations.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                heads,
                dim_head,
                None,
                dropout,
                relative_position=relative_position,
                temporal_length=temporal_length,
                operations=operations,
            )
            for _ in range(depth)
        )
        self.proj_out = operations.Linear(inner, channels) if use_linear else operations.Conv1d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        x_in = x
        x = rearrange(self.norm(x), "b c t h w -> (b h w) c t")
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "n c t -> n t c")  # [(B H W), T, C]
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x)
        if self.use_linear:
            x = rearrange(self.proj_out(x), "(b h w) t c -> b c t h w", b=b, h=h, w=w)
        else:
            x = self.proj_out(rearrange(x, "n t c -> n c t"))
            x = rearrange(x, "(b h w) c t -> b c t h w", b=b, h=h, w=w)
        return x + x_in
