"""Image-to-video conditioning: the encoded first frame and its noise augmentation."""

from __future__ import annotations

import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)

AUTO_LOG_SIGMA_MEAN = -3.0  # SAT training: log(sigma) ~ N(-3, 0.5)
AUTO_LOG_SIGMA_STD = 0.5


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device)


def noise_augment(
    image: torch.Tensor,
    sigma: float | Literal["auto"],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add Gaussian noise to conditioning pixels ``[B, 3, F, H, W]`` (in ``[-1, 1]``) before encoding.

    ``sigma="auto"`` draws ``sigma = exp(N(-3, 0.5))`` per sample, the distribution the SAT
    I2V models were trained with; a number uses that sigma for every sample (0: unchanged).
    Draw order: the per-sample log-sigmas first (auto only), then the noise, in float32.
    """
    if image.ndim != 5:
        raise ValueError(f"expected pixels [B, 3, F, H, W], got shape {tuple(image.shape)}")
    batch = image.shape[0]
    if sigma == "auto":
        log_sigma = _randn((batch,), generator, image) * AUTO_LOG_SIGMA_STD + AUTO_LOG_SIGMA_MEAN
        sigmas = log_sigma.exp()
    elif isinstance(sigma, (int, float)):
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if sigma == 0:
            return image
        sigmas = torch.full((batch,), float(sigma), device=image.device)
    else:
        raise ValueError(f"sigma must be a number or 'auto', got {sigma!r}")
    noise = _randn(tuple(image.shape), generator, image)
    sigmas = sigmas.view(batch, 1, 1, 1, 1)  # [B] -> [B, 1, 1, 1, 1]
    return (image.float() + sigmas * noise).to(image.dtype)


def image_latent(vae, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode conditioning frames ``[B, 3, 1, H, W]`` (in ``[-1, 1]``) to raw latents ``[B, 16, 1, h, w]``.

    One sample at a time, like the reference pipeline. With a ``generator`` the latent is a
    draw from the VAE posterior (what the reference I2V pipeline does); without, its mean.
    ``vae`` is anything with ``encode(x, *, sample=..., generator=...)``.
    """
    if image.ndim != 5 or image.shape[1] != 3:
        raise ValueError(f"expected pixels [B, 3, F, H, W], got shape {tuple(image.shape)}")
    if image.shape[2] != 1:
        log.warning("image_latent: %d frames given, encoding them all (I2V uses 1)", image.shape[2])
    sample = generator is not None
    latents = [vae.encode(image[k : k + 1], sample=sample, generator=generator) for k in range(image.shape[0])]
    return torch.cat(latents, dim=0)


def i2v_condition(image_latent_scaled: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
    """Zero-pad an image latent ``[B, C, 1, h, w]`` to ``[B, C, T, h, w]`` (the image at frame 0)."""
    if image_latent_scaled.ndim != 5:
        raise ValueError(f"expected a latent [B, C, 1, h, w], got shape {tuple(image_latent_scaled.shape)}")
    frames = image_latent_scaled.shape[2]
    if frames > num_latent_frames:
        raise ValueError(f"image latent has {frames} frames, more than the {num_latent_frames} to generate")
    b, c, _, h, w = image_latent_scaled.shape
    padding = image_latent_scaled.new_zeros(b, c, num_latent_frames - frames, h, w)
    return torch.cat([image_latent_scaled, padding], dim=2)
