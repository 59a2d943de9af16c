"""3D rotary position embeddings of CogVideoX 5B and 1.5.

Each attention head of size ``d`` is split into a temporal part (``d/4`` channels) and two
spatial parts (``3d/8`` each, rows then columns). Rotations act on interleaved channel pairs
``(x[2i], x[2i+1])``.

Two grids are used, following the reference pipelines:

- 1.0 (``patch_size_t is None``): the token grid is resized-and-centre-cropped into the
  training grid (``sample_height/width // patch_size``) and row/column positions are spread
  linearly over the crop (``crop_grid_positions``);
- 1.5: integer positions ``0..n-1`` ("slice" of a grid of the training size). Grids larger
  than the training size simply continue the integer positions.
"""

from __future__ import annotations

import torch
from einops import repeat


def _rope_angles(dim: int, pos: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """``[M]`` positions -> ``[M, dim]`` angles, each frequency repeated for its channel pair."""
    if dim % 2:
        raise ValueError(f"rotary sub-dimension must be even, got {dim} (head dim must be a multiple of 16)")
    inv_freq = 1.0 / theta ** (
        torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim
    )  # [dim/2]
    angles = pos.float()[:, None] * inv_freq[None, :]  # [M, dim/2]
    return angles.repeat_interleave(2, dim=1)  # [M, dim]


def crop_region(grid_hw: tuple[int, int], base_h: int, base_w: int) -> tuple[float, float, float, float]:
    """Resize a ``(h, w)`` grid to fit ``base_h x base_w`` keeping its aspect ratio, centre it.

    Returns ``(top, left, bottom, right)`` of the fitted region in base-grid coordinates.
    """
    h, w = grid_hw
    if h / w > base_h / base_w:
        fit_h, fit_w = base_h, int(round(base_h / h * w))
    else:
        fit_h, fit_w = int(round(base_w / w * h)), base_w
    top = int(round((base_h - fit_h) / 2.0))
    left = int(round((base_w - fit_w) / 2.0))
    return top, left, top + fit_h, left + fit_w


def crop_grid_positions(
    n: int, start: float, stop: float, device: torch.device | None = None
) -> torch.Tensor:
    """``n`` positions spread from ``start`` to ``stop * (n - 1) / n`` (the 1.0 crop grid)."""
    return torch.linspace(start, stop * (n - 1) / n, n, dtype=torch.float32, device=device)


def rotary_cos_sin(
    head_dim: int,
    frames: int,
    height: int,
    width: int,
    base_hw: tuple[int, int],
    slice_grid: bool,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables ``[frames*height*width, head_dim]`` (float32) in token order (t, h, w).

    ``base_hw`` is the training token grid ``(sample_height // p, sample_width // p)``;
    ``slice_grid`` selects the 1.5 integer grid instead of the 1.0 crop grid.
    """
    d_t, d_s = head_dim // 4, head_dim // 8 * 3
    if d_t + 2 * d_s != head_dim:
        raise ValueError(f"3D rotary embeddings need a head dim divisible by 8, got {head_dim}")
    if slice_grid:
        rows = torch.arange(height, dtype=torch.float32, device=device)
        cols = torch.arange(width, dtype=torch.float32, device=device)
        times = torch.arange(frames, dtype=torch.float32, device=device)
    else:
        top, left, bottom, right = crop_region((height, width), *base_hw)
        rows = crop_grid_positions(height, top, bottom, device)
        cols = crop_grid_positions(width, left, right, device)
        times = crop_grid_positions(frames, 0, frames, device)
    a_t = repeat(_rope_angles(d_t, times), "t d -> t h w d", h=height, w=width)  # [T, H, W, d_t]
    a_h = repeat(_rope_angles(d_s, rows), "h d -> t h w d", t=frames, w=width)  # [T, H, W, d_s]
    a_w = repeat(_rope_angles(d_s, cols), "w d -> t h w d", t=frames, h=height)  # [T, H, W, d_s]
    angles = torch.cat([a_t, a_h, a_w], dim=-1).reshape(frames * height * width, head_dim)  # [N, head_dim]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x[B, heads, N, d]`` by ``cos/sin[N, d]``; math in float32."""
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))  # [B, heads, N, d/2, 2]
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # [B, heads, N, d]
    return (xf * cos + rotated * sin).to(x.dtype)
