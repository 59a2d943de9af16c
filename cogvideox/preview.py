"""Cheap latent previews: a linear latent-to-RGB projection, no VAE decode.

A projection fitted for a VAE (``fit_rgb_projection``) is used when one is known; without
one, the first three principal components of the latent frame give a faithful-looking
false-colour preview for any VAE.
"""

from __future__ import annotations

import torch
from einops import rearrange

# The released CogVideoX VAE (2B, 5B and 1.5 share it). No fitted projection has been published;
# these are the only factors in public code: kijai/ComfyUI-CogVideoXWrapper (Apache-2.0),
# pipeline_cogvideox.py, class CogVideoXLatentFormat, added in commit 90e8367 (2025-01-20), same at
# fdb8abd (2025-08-07). They were picked by hand from random draws (that repository's
# CogVideoLatentPreview node), not fitted, and could not be checked here (no real weights).
# Layout: 16 rows (latent channels) x 3 (R, G, B) and an RGB bias, applied by ComfyUI's
# Latent2RGBPreviewer to 5 x the x0 prediction in the sampler's SCALED space (latent x 0.7, the
# 5B / 1.5 scaling_factor that wrapper's format states). Converted below to our raw-latent layout:
# rows x 5 x 0.7, bias unchanged.
_WRAPPER_FACTORS = (
    (0.03197404301362048, 0.04091260743347359, 0.0015679806301828524),
    (0.005517101026578029, 0.0052348639043457755, -0.005613441650464035),
    (0.0012485338264583965, -0.016096744206117782, 0.025023940031635054),
    (0.01760126794276171, 0.0036818415416642893, -0.0006019202528157255),
    (0.000444954842288864, 0.006102128982092191, 0.0008457999272962447),
    (-0.010531904354560697, -0.0032275501924977175, -0.00886595780267917),
    (-0.0001454543946122991, 0.010199210750845965, -0.00012702234832386188),
    (0.02078497279904325, -0.001669617778939972, 0.006712703698951264),
    (0.005529571599763264, 0.009733929789086743, 0.001887302765339838),
    (0.012138415094654218, 0.024684961927224837, 0.037211249767461915),
    (0.0010364484570000384, 0.01983636315929172, 0.009864602025627755),
    (0.006802862648143341, -0.0010509255113510681, -0.007026003345126021),
    (0.0003532208468418043, 0.005351971582801936, -0.01845912126717106),
    (-0.009045079994694397, -0.01127941143183089, 0.0042294057970470806),
    (0.002548289972720752, 0.025224244654428216, -0.0006086130121693347),
    (-0.011135669222532816, 0.0018181308593668505, 0.02794541485349922),
)
_WRAPPER_BIAS = (-0.023, 0.0, -0.017)
_WRAPPER_GAIN, _WRAPPER_SCALE = 5.0, 0.7
RELEASED_VAE_RGB: tuple[tuple[float, ...], ...] = (
    *(tuple(v * _WRAPPER_GAIN * _WRAPPER_SCALE for v in row) for row in _WRAPPER_FACTORS),
    _WRAPPER_BIAS,
)  # [17][3] raw latent -> RGB in [-1, 1], bias last


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
