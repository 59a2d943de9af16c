"""Cheap latent previews: a linear latent-to-RGB projection, no VAE decode.

A projection fitted for a VAE (``fit_rgb_projection``) is used when one is known; without
one, the first three principal components of the latent frame give a faithful-looking
false-colour preview for any VAE.
"""

from __future__ import annotations

import torch
from einops import rearrange


def fit_rgb_projection(latents: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Least-squares ``[C+1, 3]`` projection (bias last) from latent channels to RGB.

    latents ``[B, C, T, h, w]`` and the matching pixels ``[B, 3, F, H, W]`` in -1..1; the
    pixels are average-pooled to the latent grid (first frame of each latent frame).
    """
    b, c, t, h, w = latents.shape
    frames = pixels[:, :, ::4][:, :, :t]  # latent frame i starts at pixel frame 4i
    frames = rearrange(frames, "b c t hh ww -> (b t) c hh ww")  # [B*T, 3, H, W]
    pooled = torch.nn.functional.adaptive_avg_pool2d(frames.float(), (h, w))  # [B*T, 3, h, w]
    y = rearrange(pooled, "n c h w -> (n h w) c")  # [N, 3]
    x = rearrange(latents.float(), "b c t h w -> (b t h w) c")  # [N, C]
    x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # [N, C+1]
    return torch.linalg.lstsq(x, y).solution  # [C+1, 3]


def latent_preview(latent: torch.Tensor, projection: torch.Tensor | None = None, frame: int | None = None):
    """One latent frame of ``[B, C, T, h, w]`` -> ``[h, w, 3]`` uint8 RGB on the CPU."""
    t = latent.shape[2]
    x = latent[0, :, t // 2 if frame is None else frame].float().cpu()  # [C, h, w]
    c, h, w = x.shape
    flat = rearrange(x, "c h w -> (h w) c")  # [h*w, C]
    if projection is not None and projection.shape[0] == c + 1:
        rgb = flat @ projection[:c].float() + projection[c].float()  # [h*w, 3] in -1..1
        rgb = (rgb + 1.0) * 0.5
    else:
        centred = flat - flat.mean(0, keepdim=True)
        k = min(3, c, h * w)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        rgb = centred @ v[:k].T  # [h*w, k]
        if k < 3:
            rgb = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], 3 - k)], dim=1)
        lo, hi = rgb.amin(0, keepdim=True), rgb.amax(0, keepdim=True)
        rgb = (rgb - lo) / (hi - lo).clamp_min(1e-6)
    rgb = rearrange(rgb, "(h w) c -> h w c", h=h, w=w)  # [h, w, 3]
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
