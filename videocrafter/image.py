"""The I2V image encoder's input, as ``FrozenOpenCLIPImageEmbedderV2.preprocess`` makes it.

The reference resizes the whole image to 224x224 (no centre crop: the aspect ratio is squashed)
with kornia's ``resize(..., interpolation="bicubic", align_corners=True, antialias=True)``: a
Gaussian blur with ``sigma = (factor - 1) / 2`` per downscaled axis (reflect padding), then
bicubic interpolation; then maps -1..1 to 0..1 and normalises with CLIP's mean and std.
Its unconditional image is all zeros in -1..1 (mid grey).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def _gaussian_kernel(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur_axis(x: torch.Tensor, factor: float, axis: int) -> torch.Tensor:
    """Separable Gaussian blur along ``axis`` (-2 rows, -1 columns) for a ``factor``x downscale."""
    sigma = max((factor - 1.0) / 2.0, 0.001)
    size = int(max(4.0 * sigma, 3))
    size = size if size % 2 else size + 1
    if x.shape[axis] == 1:
        return x
    kernel = _gaussian_kernel(size, sigma, x.dtype, x.device)
    c = x.shape[1]
    pad = size // 2
    if axis == -1:
        x = F.pad(x, (pad, pad, 0, 0), mode="reflect")
        return F.conv2d(x, kernel.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    x = F.pad(x, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def resize_like_reference(x: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, size, size]``: antialiasing blur when shrinking, bicubic."""
    h, w = x.shape[-2:]
    factors = (h / size, w / size)
    if max(factors) > 1:  # kornia blurs both axes once either shrinks
        x = _blur_axis(_blur_axis(x, factors[0], -2), factors[1], -1)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)


def clip_image_input(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, 3]`` in 0..1 -> normalised CLIP input ``[B, 3, 224, 224]`` float32."""
    x = image[..., :3].movedim(-1, 1).float() * 2 - 1  # [B, 3, H, W] in -1..1, the reference's input
    x = (resize_like_reference(x) + 1) / 2
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def unconditional_image(batch: int, height: int = CLIP_SIZE, width: int = CLIP_SIZE) -> torch.Tensor:
    """The reference's unconditional image (zeros in -1..1) as a ComfyUI IMAGE: mid grey."""
    return torch.full((batch, height, width, 3), 0.5)
