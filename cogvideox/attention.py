"""Joint text-video self-attention and the feed-forward network of a CogVideoX block.

Text tokens come first in the joint sequence; rotary embeddings (when given) rotate only the
video tokens. Parameter names follow diffusers (``to_q``, ``norm_q``, ``to_out.0``, ``net.0.proj``).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .embeddings import _activation
from .linear import linear, linear_into
from .ops import DEFAULT_OPERATIONS, compute_dtype, plain_linear, resident
from .scratch import NO_SCRATCH, Scratch


def _layer_norm_fp32(norm: nn.LayerNorm, x: torch.Tensor, scratch: Scratch = NO_SCRATCH) -> torch.Tensor:
    """LayerNorm evaluated in float32 (weights upcast on the fly); returns float32.

    With an enabled ``scratch`` (no autograd) a float32 ``x`` is normalised into a scratch
    buffer (a strided ``x`` is first copied into another one): the same kernel and numbers as
    ``F.layer_norm``. LayerNorm has no ``out=`` kernel (``native_layer_norm.out`` normalises
    into a temporary and copies), but the temporary is freed at once and its memory reused, so
    this still halves the page faults of the step against returning ``F.layer_norm``'s output
    (~58k against ~100k per benchmark step; wall time within noise).
    """
    if not resident(norm):  # a casting layer (comfy.ops): its own forward casts and patches the weights
        return norm(x.float())
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    if not scratch.enabled or torch.is_grad_enabled() or x.dtype != torch.float32:
        return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)
    src = x
    if not x.is_contiguous():
        src = scratch.empty(*x.shape, dtype=x.dtype, device=x.device)
        src.copy_(x)
    out = scratch.empty(*x.shape, dtype=x.dtype, device=x.device)
    stats = (x.new_empty(0), x.new_empty(0))  # mean, rstd: sized by the op
    torch.ops.aten.native_layer_norm.out(
        src, norm.normalized_shape, weight, bias, norm.eps, out0=out, out1=stats[0], out2=stats[1]
    )
    if src is not x:
        scratch.give(src)
    return out


def _linear_in_scratch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scratch: Scratch) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for ``x[..., in]`` into a scratch buffer ``[..., out]`` (see ``linear_into``)."""
    rows, width = x.shape[:-1], weight.shape[0]
    out = scratch.empty(*rows, width, dtype=x.dtype, device=x.device)
    flat = x.reshape(rows.numel(), x.shape[-1])  # [..., in] -> [rows, in]
    linear_into(out.view(rows.numel(), width), flat, weight, bias)
    return out


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention, one (batch, head) at a time to bound the score matrix."""
    out = torch.empty_like(q)  # [B, heads, S, d]
    scale = q.shape[-1] ** -0.5
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            scores = torch.matmul(q[b, h], k[b, h].transpose(-1, -2)).mul_(scale)  # [S, S]
            out[b, h] = torch.matmul(scores.softmax(dim=-1), v[b, h])
    return out


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    import sageattention  # optional dependency, checked by available_backends()

    return sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=False)


ATTENTION_BACKENDS = {"sdpa": _sdpa, "math": _math_attention, "sage": _sage}


def available_backends() -> list[str]:
    """Backends usable here: ``sdpa`` and ``math`` always, ``sage`` when ``sageattention`` imports."""
    names = ["sdpa", "math"]
    if importlib.util.find_spec("sageattention") is not None:
        names.append("sage")
    return names


def set_attention_backend(model: nn.Module, name: str) -> None:
    """Select the attention kernel of every ``JointAttention`` in ``model`` ("sdpa" is the default)."""
    if name not in available_backends():
        raise ValueError(f"attention backend {name!r} is not available here; choose one of {available_backends()}")
    for module in model.modules():
        if isinstance(module, JointAttention):
            module.backend = name


def rotate_video_(x: torch.Tensor, text_len: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the video part (after ``text_len``) of ``x[B, heads, S, d]`` by ``cos/sin[N, d]``.

    Interleaved pairs: ``(x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)``, the product of the
    complex number ``x0 + i x1`` with ``cos + i sin`` (``cos``/``sin`` repeat each value for the
    two members of a pair). Without autograd a float32 ``x`` is rotated in place as a complex
    view: one pass, no rotated copy.
    """
    video = x[:, :, text_len:]  # [B, heads, N, d]
    if not torch.is_grad_enabled() and x.dtype == torch.float32:
        pairs = torch.view_as_complex(video.unflatten(-1, (-1, 2)))  # [B, heads, N, d/2] complex64 view
        pairs.mul_(torch.complex(cos[:, 0::2].float(), sin[:, 0::2].float()))  # [N, d/2]
        return x
    swapped = video.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0) pairs, a copy
    signed_sin = (sin.unflatten(-1, (-1, 2)) * _PAIR_SIGN.to(sin)).flatten(-2)  # (-s, s) [N, d]
    if torch.is_grad_enabled():
        return torch.cat([x[:, :, :text_len], video * cos + swapped * signed_sin], dim=2)
    video.mul_(cos).addcmul_(swapped, signed_sin)  # other dtypes without autograd: in place, 3 passes
    return x


_PAIR_SIGN = torch.tensor([-1.0, 1.0])


class JointAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool, qk_eps: float = 1e-6, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        inner = heads * head_dim
        self.heads = heads
        self.to_q = ops.Linear(dim, inner, bias=bias)
        self.to_k = ops.Linear(dim, inner, bias=bias)
        self.to_v = ops.Linear(dim, inner, bias=bias)
        self.norm_q = ops.LayerNorm(head_dim, eps=qk_eps)
        self.norm_k = ops.LayerNorm(head_dim, eps=qk_eps)
        self.to_out = nn.ModuleList([ops.Linear(inner, dim, bias=True), nn.Dropout(0.0)])
        self.backend = "sdpa"  # a key of ATTENTION_BACKENDS, see set_attention_backend

    def _qkv(self, seq: torch.Tensor, scratch: Scratch) -> tuple[torch.Tensor, ...]:
        """Projections ``[B, heads, S, d]`` each and the buffer holding them (or None).

        One matmul when the three are plain Linear layers (into a scratch buffer when enabled).
        """
        projections = (self.to_q, self.to_k, self.to_v)
        if not all(plain_linear(m) for m in projections):
            q, k, v = (rearrange(m(seq), "b s (h d) -> b h s d", h=self.heads) for m in projections)
            return q, k, v, None
        weight = torch.cat([m.weight for m in projections])  # [3*inner, dim]
        bias = torch.cat([m.bias for m in projections])  # [3*inner]
        if not torch.is_grad_enabled():
            qkv = _linear_in_scratch(seq, weight, bias, scratch)  # [B, S, 3*inner]
        else:
            qkv = F.linear(seq, weight, bias)  # [B, S, 3*inner]
        q, k, v = rearrange(qkv, "b s (three h d) -> three b h s d", three=3, h=self.heads)
        return q, k, v, qkv

    def forward(
        self,
        seq: torch.Tensor,
        text_len: int,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        scratch: Scratch = NO_SCRATCH,
    ) -> torch.Tensor:
        """``seq[B, L+N, dim]`` (text first) -> ``[B, L+N, dim]`` in the projection dtype."""
        seq = seq.to(compute_dtype(self.to_q))
        q, k, v, qkv = self._qkv(seq, scratch)  # [B, heads, S, d] each
        q = _layer_norm_fp32(self.norm_q, q, scratch)
        k = _layer_norm_fp32(self.norm_k, k, scratch)
        if rope is not None:
            cos, sin = rope
            q = rotate_video_(q, text_len, cos, sin)
            k = rotate_video_(k, text_len, cos, sin)
        q, k = q.to(v.dtype), k.to(v.dtype)
        out = ATTENTION_BACKENDS[self.backend](q, k, v)  # [B, heads, S, d]
        del v
        scratch.give(q, k)
        if qkv is not None:
            scratch.give(qkv)
        if not torch.is_grad_enabled() and plain_linear(self.to_out[0]):
            b, h, s, d = out.shape
            tokens = scratch.empty(b, s, h * d, dtype=out.dtype, device=out.device)  # [B, S, heads*d]
            tokens.view(b, s, h, d).copy_(out.transpose(1, 2))  # [B, heads, S, d] -> [B, S, heads, d]
            scratch.give(out)
            projected = _linear_in_scratch(tokens, self.to_out[0].weight, self.to_out[0].bias, scratch)
            scratch.give(tokens)
        else:
            projected = self.to_out[0](rearrange(out, "b h s d -> b s (h d)"))  # [B, S, heads*d] in
        return self.to_out[1](projected)


class _ProjAct(nn.Module):
    """``act(proj(x))``: the first layer of the feed-forward network (named ``net.0``)."""

    def __init__(self, dim_in: int, dim_out: int, act: str, operations=None):
        super().__init__()
        self.proj = (operations or DEFAULT_OPERATIONS).Linear(dim_in, dim_out)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if plain_linear(self.proj) and x.ndim == 2:  # [rows, in]: the activation fused where it can be
            return linear(x, self.proj.weight, self.proj.bias, self.act)
        return self.act(self.proj(x))


# Without autograd the feed-forward runs over this many tokens at a time, so its [rows, 4D]
# intermediate stays in cache between the two matmuls and the GELU (the same numbers: each token
# is computed alone either way). 512 x 2048 floats: 0.225 s against 0.277 s for the whole
# [2, 4516, 512] at once on 2 cores (measured; 256: 0.240 s, 1024: 0.246 s).
FF_CHUNK_ROWS = 512


class FeedForward(nn.Module):
    def __init__(self, dim: int, act: str, dropout: float = 0.0, mult: int = 4, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        hidden = dim * mult
        self.net = nn.ModuleList(
            [_ProjAct(dim, hidden, act, ops), nn.Dropout(dropout), ops.Linear(hidden, dim), nn.Dropout(dropout)]
        )

    def forward(self, x: torch.Tensor, scratch: Scratch = NO_SCRATCH) -> torch.Tensor:
        x = x.to(compute_dtype(self.net[0].proj))
        rows = x.shape[:-1].numel()
        if torch.is_grad_enabled() or rows <= FF_CHUNK_ROWS:
            for layer in self.net:
                x = layer(x)
            return x
        flat = x.reshape(rows, x.shape[-1])  # [B, S, D] -> [B*S, D]
        proj_act, dropout, proj_out, dropout_out = self.net
        plain_out = plain_linear(proj_out)
        out = None
        for a in range(0, rows, FF_CHUNK_ROWS):
            h = dropout(proj_act(flat[a : a + FF_CHUNK_ROWS]))  # [rows', D] -> [rows', 4D]
            if out is None:
                out = scratch.empty(rows, proj_out.out_features, dtype=h.dtype, device=h.device)  # [B*S, D]
            if plain_out:  # the second matmul writes its rows of the output directly
                linear_into(out[a : a + h.shape[0]], h, proj_out.weight, proj_out.bias)
            else:
                out[a : a + h.shape[0]] = proj_out(h)
        return dropout_out(out).view(*x.shape[:-1], out.shape[-1])  # [B*S, D] -> [B, S, D]
