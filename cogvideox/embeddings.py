"""Input embeddings of the CogVideoX transformer.

- sinusoidal timestep features and the two-layer MLP on top of them (``time_embedding``,
  ``ofs_embedding``),
- 3D sin-cos absolute positions (CogVideoX-2B) and the learned absolute positions of 5B-I2V,
- the patch embedding (a per-frame ``Conv2d`` for 1.0, a ``Linear`` over space-time patches
  for 1.5) and the text projection.

Parameter names follow diffusers (``linear_1``, ``proj``, ``text_proj``, ``pos_embedding``).
Everything numerically sensitive is computed in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .ops import DEFAULT_OPERATIONS, compute_dtype, linear_fp32


def timestep_features(
    t: torch.Tensor,
    dim: int,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps ``t[B]`` -> ``[B, dim]`` float32."""
    if t.ndim != 1:
        raise ValueError(f"timestep_features expects a 1-D tensor of timesteps, got shape {tuple(t.shape)}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    inv_freq = torch.exp(-math.log(max_period) * k / (half - freq_shift))  # [half]
    angles = t.float()[:, None] * inv_freq[None, :]  # [B, half]
    sin, cos = angles.sin(), angles.cos()
    feats = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)  # [B, 2*half]
    if dim % 2:
        feats = F.pad(feats, (0, 1))  # [B, dim]
    return feats


def _activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU()
    if name == "gelu":
        return nn.GELU()
    if name == "gelu-approximate":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unsupported activation {name!r}; expected 'silu', 'gelu' or 'gelu-approximate'")


class TimestepMLP(nn.Module):
    """``linear_2(act(linear_1(features)))``, evaluated in float32 whatever the weight dtype."""

    def __init__(self, in_dim: int, out_dim: int, act: str = "silu", operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.linear_1 = ops.Linear(in_dim, out_dim)
        self.act = _activation(act)
        self.linear_2 = ops.Linear(out_dim, out_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return linear_fp32(self.linear_2, self.act(linear_fp32(self.linear_1, feats)))


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``[M]`` positions -> ``[M, dim]`` as ``[sin | cos]``, frequencies in float64 where available."""
    ftype = torch.float32 if pos.device.type == "mps" else torch.float64
    omega = torch.arange(dim // 2, dtype=ftype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    angles = pos.reshape(-1).to(ftype)[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()  # [M, dim]


def sincos_positions_3d(
    dim: int,
    frames: int,
    height: int,
    width: int,
    spatial_scale: float = 1.0,
    temporal_scale: float = 1.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """3D sin-cos positions of a ``frames x height x width`` token grid -> ``[frames*height*width, dim]``.

    A quarter of the channels encodes time, the rest space; the spatial half-split encodes the
    column (w) coordinate first and the row (h) coordinate second. Token order is (t, h, w).
    """
    if dim % 16:
        raise ValueError(f"3D sin-cos positions need a hidden size divisible by 16, got {dim}")
    d_t, d_s = dim // 4, 3 * dim // 4
    ys = torch.arange(height, dtype=torch.float32, device=device) / spatial_scale
    xs = torch.arange(width, dtype=torch.float32, device=device) / spatial_scale
    ts = torch.arange(frames, dtype=torch.float32, device=device) / temporal_scale
    col = repeat(xs, "w -> (h w)", h=height)  # [H*W]
    row = repeat(ys, "h -> (h w)", w=width)  # [H*W]
    spatial = torch.cat([_sincos_1d(d_s // 2, col), _sincos_1d(d_s // 2, row)], dim=1)  # [H*W, d_s]
    temporal = _sincos_1d(d_t, ts)  # [T, d_t]
    spatial = repeat(spatial, "s d -> (t s) d", t=frames)  # [T*H*W, d_s]
    temporal = repeat(temporal, "t d -> (t s) d", s=height * width)  # [T*H*W, d_t]
    return torch.cat([temporal, spatial], dim=1)  # [T*H*W, dim]


class PatchEmbed(nn.Module):
    """Latent video -> tokens, text embeddings -> tokens.

    ``proj`` is a ``Conv2d`` applied frame by frame (1.0, ``patch_size_t is None``) or a
    ``Linear`` over ``(c, pt, ph, pw)`` space-time patches (1.5). ``pos_embedding`` exists only
    for learned positions (5B-I2V) and holds ``[1, max_text_seq_length + num_patches, dim]``.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        text_dim: int,
        patch_size: int,
        patch_size_t: int | None,
        bias: bool,
        learned_positions_len: int | None,
        operations=None,
    ):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.patch_size = patch_size
        self.patch_size_t = patch_size_t
        if patch_size_t is None:
            self.proj = ops.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        else:
            # The upstream 1.5 module always carries a bias here, whatever patch_bias says.
            self.proj = ops.Linear(in_channels * patch_size * patch_size * patch_size_t, dim)
        self.text_proj = ops.Linear(text_dim, dim)
        if learned_positions_len is not None:
            self.register_buffer("pos_embedding", torch.zeros(1, learned_positions_len, dim), persistent=True)
        else:
            self.pos_embedding = None

    def embed_video(self, x: torch.Tensor) -> torch.Tensor:
        """``x[B, C, T, H, W]`` -> tokens ``[B, T'*H'*W', dim]`` in (t, h, w) order."""
        p, pt = self.patch_size, self.patch_size_t
        dtype = compute_dtype(self.proj)
        if pt is None:
            b = x.shape[0]
            frames = rearrange(x, "b c t h w -> (b t) c h w")  # [B*T, C, H, W]
            tok = self.proj(frames.to(dtype))  # [B*T, D, H/p, W/p]
            return rearrange(tok, "(b t) d h w -> b (t h w) d", b=b)  # [B, T*H'*W', D]
        patches = rearrange(
            x, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=p, pw=p
        )  # [B, T'*H'*W', C*pt*p*p]
        return self.proj(patches.to(dtype))  # [B, N, D]

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        return self.text_proj(context.to(compute_dtype(self.text_proj)))  # [B, L, D]
