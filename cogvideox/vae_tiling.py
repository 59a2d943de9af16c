"""Spatial tiling of the VAE with blended overlaps (the reference's tiling, lean on memory).

Tiles are laid out and blended exactly as diffusers' ``tiled_encode`` / ``tiled_decode``:
tile ``(r, c)`` is blended linearly over its top rows with the already-blended tile above and
over its left columns with the already-blended tile on its left, then cropped to its stride.
Instead of keeping every tile and concatenating, each blended tile is written into one
preallocated output, and only the overlap strips the next tiles blend with are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .configs import VAEConfig
from .vae_blocks import stream_chunk_budget

# Tiles are chosen to save memory, so their passes stream frame by frame (a chunk budget of one
# byte rounds up to one frame) instead of in chunks of up to 48 MiB. Real-size VAE, 64x96 px tiles,
# latent 5x15x22 (`tools/benchmark.py --only vae`, 2 threads): peak RSS 453 MiB, 0.46x diffusers';
# with 1 thread a 16 MiB budget peaked at 450 MiB and 8 MiB at 354 MiB. About 5% slower.
TILED_STREAM_CHUNK_BYTES = 1

if TYPE_CHECKING:
    from .vae import CogVideoXVAE


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes in pixels and overlap factors, as diffusers' ``enable_tiling`` takes them.

    ``None`` sizes mean half the VAE config's ``sample_height`` / ``sample_width``.
    """

    tile_sample_min_height: int | None = None
    tile_sample_min_width: int | None = None
    tile_overlap_factor_height: float = 1 / 6
    tile_overlap_factor_width: float = 1 / 5

    @staticmethod
    def resolve(tile: TileConfig | bool | None, config: VAEConfig) -> TileConfig | None:
        if tile is None or tile is False:
            return None
        tile = TileConfig() if tile is True else tile
        return TileConfig(
            tile.tile_sample_min_height or config.sample_height // 2,
            tile.tile_sample_min_width or config.sample_width // 2,
            tile.tile_overlap_factor_height,
            tile.tile_overlap_factor_width,
        )

    def latent_size(self, factor: int) -> tuple[int, int]:
        return int(self.tile_sample_min_height / factor), int(self.tile_sample_min_width / factor)

    def applies_to_sample(self, hw: tuple[int, int]) -> bool:
        return hw[0] > self.tile_sample_min_height or hw[1] > self.tile_sample_min_width

    def applies_to_latent(self, hw: tuple[int, int], factor: int) -> bool:
        lh, lw = self.latent_size(factor)
        return hw[0] > lh or hw[1] > lw


def _blend_rows_(below: torch.Tensor, above: tuple[torch.Tensor, int], extent: int) -> None:
    """Blend the top rows of ``below`` with the bottom strip of the tile above (in place)."""
    strip, above_h = above
    e = min(above_h, below.shape[3], extent)
    if e <= 0:
        return
    w = torch.arange(e, dtype=torch.float64) / e
    w_new = w.to(below.dtype).to(below.device).view(e, 1)  # [e] -> [e, 1]
    w_old = (1 - w).to(below.dtype).to(below.device).view(e, 1)  # [e] -> [e, 1]
    old = strip[:, :, :, strip.shape[3] - e :]
    below[:, :, :, :e] = old * w_old + below[:, :, :, :e] * w_new


def _blend_cols_(right: torch.Tensor, left: tuple[torch.Tensor, int], extent: int) -> None:
    """Blend the left columns of ``right`` with the right strip of the tile on its left."""
    strip, left_w = left
    e = min(left_w, right.shape[4], extent)
    if e <= 0:
        return
    w = torch.arange(e, dtype=torch.float64) / e
    w_new = w.to(right.dtype).to(right.device)
    w_old = (1 - w).to(right.dtype).to(right.device)
    old = strip[..., strip.shape[4] - e :]
    right[..., :e] = old * w_old + right[..., :e] * w_new


def _tile_plan(size: int, tile: int, stride: int, limit: int, out_len) -> list[tuple[int, int, int]]:
    """(input start, output offset, output crop) per tile along one axis.

    Every tile but the last keeps ``limit`` outputs (its stride in output units); the last tile
    is the first that reaches the end and keeps the rest, so the crops add up to the untiled size.
    """
    plan, offset, start = [], 0, 0
    while True:
        last = start + tile >= size
        crop = out_len(size - start) if last else limit
        plan.append((start, offset, crop))
        offset += crop
        if last:
            return plan
        start += stride


def _run_tiles(x, tile_hw, stride_hw, blend_hw, limit_hw, out_len, run) -> torch.Tensor:
    rows = _tile_plan(x.shape[3], tile_hw[0], stride_hw[0], limit_hw[0], out_len)
    cols = _tile_plan(x.shape[4], tile_hw[1], stride_hw[1], limit_hw[1], out_len)
    out_h = rows[-1][1] + rows[-1][2]
    out_w = cols[-1][1] + cols[-1][2]
    out = None
    above: list[tuple[torch.Tensor, int] | None] = [None] * len(cols)
    for r, (i, off_h, crop_h) in enumerate(rows):
        left = None
        for c, (j, off_w, crop_w) in enumerate(cols):
            t = run(x[:, :, :, i : i + tile_hw[0], j : j + tile_hw[1]])  # [B, C, F, th, tw]
            if out is None:
                out = t.new_empty(*t.shape[:3], out_h, out_w)
            if r > 0:
                _blend_rows_(t, above[c], blend_hw[0])
            if c > 0:
                _blend_cols_(t, left, blend_hw[1])
            out[:, :, :, off_h : off_h + crop_h, off_w : off_w + crop_w] = t[:, :, :, :crop_h, :crop_w]
            th, tw = t.shape[3], t.shape[4]
            above[c] = (t[:, :, :, th - min(blend_hw[0], th) :].clone(), th)
            left = (t[..., tw - min(blend_hw[1], tw) :].clone(), tw)
            del t
    return out


def _latent_tiles(tile: TileConfig, factor: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Tile and stride on the latent grid: ``(lat_h, lat_w), (stride_h, stride_w)``.

    diffusers' tiling mixes a latent stride with pixel crops and blends (``int`` of each), which
    only agree when the tile size divides evenly (its defaults do); otherwise its output grows by
    the difference at every seam (64x96 px tiles decode a 120x176 video to 132x186) and its
    blends pair pixels that are not the same place. Here both the stride and the overlap live on
    the latent grid, so tiles always meet where they should; for sizes that divide evenly this is
    diffusers' tiling exactly.
    """
    lat_h, lat_w = tile.latent_size(factor)
    if lat_h < 2 or lat_w < 2:
        raise ValueError(f"tiles of {tile.tile_sample_min_height}x{tile.tile_sample_min_width} px are below 2 latents")
    stride_h = max(1, int(lat_h * (1 - tile.tile_overlap_factor_height)))
    stride_w = max(1, int(lat_w * (1 - tile.tile_overlap_factor_width)))
    return (lat_h, lat_w), (stride_h, stride_w)


def _down_len(n: int, levels: int) -> int:
    for _ in range(levels):
        n = (n - 2) // 2 + 1  # pad 1 on the far side, 3x3 conv, stride 2
    return n


def tiled_encode(
    vae: CogVideoXVAE, x: torch.Tensor, tile: TileConfig, frame_batch: int | None, callback=None
) -> torch.Tensor:
    """Moments ``[B, 2C, T, h, w]`` of ``x`` encoded tile by tile; ``callback(done, total)`` after each frame batch."""
    factor = vae.spatial_factor
    levels = len(vae.config.block_out_channels) - 1
    (lat_h, lat_w), (stride_h, stride_w) = _latent_tiles(tile, factor)
    with stream_chunk_budget(TILED_STREAM_CHUNK_BYTES):
        return _run_tiles(
            x,
            (lat_h * factor, lat_w * factor),  # pixel tiles on the latent grid
            (stride_h * factor, stride_w * factor),
            (lat_h - stride_h, lat_w - stride_w),  # latent overlap, blended
            (stride_h, stride_w),
            lambda n: _down_len(n, levels),
            lambda t: vae.encode_tile(t, frame_batch, callback),
        )


def tiled_decode(
    vae: CogVideoXVAE, z: torch.Tensor, tile: TileConfig, frame_batch: int | None, callback=None
) -> torch.Tensor:
    """Pixels decoded tile by tile from latents ``z``; ``callback(done, total)`` after each frame batch."""
    factor = vae.spatial_factor
    (lat_h, lat_w), (stride_h, stride_w) = _latent_tiles(tile, factor)
    with stream_chunk_budget(TILED_STREAM_CHUNK_BYTES):
        return _run_tiles(
            z,
            (lat_h, lat_w),
            (stride_h, stride_w),
            ((lat_h - stride_h) * factor, (lat_w - stride_w) * factor),  # pixel overlap, blended
            (stride_h * factor, stride_w * factor),
            lambda n: n * factor,
            lambda t: vae.decode_tile(t, frame_batch, callback),
        )


def auto_tile(
    config: VAEConfig,
    height: int,
    width: int,
    budget_bytes: int,
    dtype: torch.dtype = torch.bfloat16,
    overlap: tuple[float, float] = (1 / 6, 1 / 5),
    bytes_per_pixel_channel: float = 8.0,
) -> TileConfig | None:
    """Tile size (pixels) whose estimated decode peak fits ``budget_bytes``; None if no tiling needed.

    The estimate is ``bytes_per_pixel_channel`` live activations of ``block_out_channels[0]``
    channels over the 9 frames of the first latent batch, per tile pixel, in ``dtype``: a
    rough linear model of the lean decoder's peak (measured ~7-8 with live-tensor tracking on a
    reduced-width VAE; weights and cuDNN workspaces not included), not a guarantee.
    """
    item = torch.empty((), dtype=dtype).element_size()
    per_pixel = bytes_per_pixel_channel * config.block_out_channels[0] * 9 * item
    max_pixels = budget_bytes / per_pixel
    if height * width <= max_pixels:
        return None
    factor = 2 ** (len(config.block_out_channels) - 1)
    scale = math.sqrt(max_pixels / (height * width))
    tile_h = max(factor * 2, int(height * scale) // factor * factor)
    tile_w = max(factor * 2, int(width * scale) // factor * factor)
    return TileConfig(min(tile_h, height), min(tile_w, width), overlap[0], overlap[1])
