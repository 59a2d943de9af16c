"""Image-to-video conditioning: the encoded first frame and its noise augmentation."""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

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


# --------------------------------------------------------------------- CogVideoX-Fun
# InP models take [noisy latent 16, mask 1, masked-video latent 16] on channels; Control models
# [noisy latent 16, control-video latent 16]. Layouts follow VideoX-Fun's inpaint pipeline
# (docs/cogvideox_fun.md). Masks, in pixels and on the latent grid, are 1 where the video is
# unknown (to be generated), ComfyUI's convention for ``concat_mask``; the network's mask
# channel is the reference's ``1 - mask`` (1 = known) times the scaling factor.


def binarize_mask(mask: torch.Tensor) -> torch.Tensor:
    """A pixel mask in 0..1 -> {0, 1} (1 = unknown), thresholded at 0.5 like the reference."""
    return (mask >= 0.5).to(torch.float32)


def masked_video(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixels ``[B, 3, F, H, W]`` in -1..1 with the unknown ones (``mask`` ``[B, 1, F, H, W]`` >= 0.5) at -1."""
    if video.ndim != 5 or mask.ndim != 5 or mask.shape[1] != 1:
        raise ValueError(f"expected video [B, 3, F, H, W] and mask [B, 1, F, H, W], got {video.shape}, {mask.shape}")
    if video.shape[2:] != mask.shape[2:]:
        raise ValueError(
            f"the mask covers {mask.shape[2]} frames of {mask.shape[3]}x{mask.shape[4]}, the video "
            f"{video.shape[2]} of {video.shape[3]}x{video.shape[4]}; they must match"
        )
    unknown = binarize_mask(mask).to(video.dtype)
    return video * (1 - unknown) - unknown  # [B, 3, F, H, W]


def noise_augment_known(video: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of ``sigma`` on a masked video's pixels, none on the unknown (-1) ones.

    The InP reference does this before encoding when the model's config says
    ``add_noise_in_inpaint_model``. Draw: float32 ``normal_`` into a frame-major tensor
    (``[B, F, 3, H, W]`` memory viewed as ``[B, 3, F, H, W]``), exactly what the reference's
    ``randn_like`` does with its frame-major pixels (a strided fill, not ``randn``'s vectorised
    one), so the same seed gives the reference's noise.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return video
    b, c, f, h, w = video.shape
    device = generator.device if generator is not None else video.device
    noise = torch.empty((b, f, c, h, w), device=device, dtype=torch.float32).permute(0, 2, 1, 3, 4)
    noise = noise.normal_(generator=generator).to(video.device) * float(sigma)  # [B, 3, F, H, W]
    noise = torch.where(video == -1, torch.zeros_like(noise), noise)
    return (video.float() + noise).to(video.dtype)


def inpaint_mask_latent(mask: torch.Tensor, latent_frames: int, height: int, width: int) -> torch.Tensor:
    """The pixel mask ``[B, 1, F, H, W]`` on the latent grid ``[B, 1, T, h, w]``; both 1 = unknown.

    Like the reference (``resize_mask(1 - mask, ...)``, its known-mask): the first pixel frame
    alone becomes latent frame 0 and the other pixel frames are resized together to the other
    latent frames (trilinear, ``align_corners=False``), matching the causal VAE's frame grouping.
    Returned as ``1 -`` that known-mask, so ``fun_condition`` gives the reference's channel.
    """
    if mask.ndim != 5 or mask.shape[1] != 1:
        raise ValueError(f"expected a mask [B, 1, F, H, W], got shape {tuple(mask.shape)}")
    known = 1 - binarize_mask(mask)  # [B, 1, F, H, W]
    first = F.interpolate(known[:, :, :1], size=(1, height, width), mode="trilinear", align_corners=False)
    if latent_frames == 1:
        return 1 - first
    if known.shape[2] < 2:
        raise ValueError(f"a 1-frame mask cannot cover {latent_frames} latent frames")
    rest = F.interpolate(
        known[:, :, 1:], size=(latent_frames - 1, height, width), mode="trilinear", align_corners=False
    )
    return 1 - torch.cat([first, rest], dim=2)  # [B, 1, T, h, w], 1 = unknown


def start_end_video(
    start: torch.Tensor | None, end: torch.Tensor | None, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A video and a mask for first/last-frame generation, as the reference builds them.

    ``start`` / ``end``: ``[B, 3, k, H, W]`` in -1..1 (k known frames, usually 1). The start frames
    lead, the end frames close the video; the mask is 0 on them and 1 (unknown) elsewhere. Without
    a start, the video is -1 (a blank), so only the end frames are known.
    Returns ``(video [B, 3, frames, H, W], mask [B, 1, frames, H, W])``.
    """
    ref = start if start is not None else end
    if ref is None:
        raise ValueError("start_end_video needs a start or an end image")
    if start is not None and end is not None and start.shape[-2:] != end.shape[-2:]:
        raise ValueError(f"start image is {tuple(start.shape[-2:])}, end image {tuple(end.shape[-2:])}: sizes differ")
    b, _, _, h, w = ref.shape
    video = ref.new_full((b, 3, frames, h, w), -1.0)
    mask = ref.new_ones((b, 1, frames, h, w))
    if start is not None:
        k = min(start.shape[2], frames)
        video[:] = start[:, :, :1]  # the reference tiles the first start frame over the clip
        video[:, :, :k] = start[:, :, :k]
        mask[:, :, :k] = 0
    if end is not None:
        k = min(end.shape[2], frames)
        video[:, :, frames - k :] = end[:, :, end.shape[2] - k :]
        mask[:, :, frames - k :] = 0
    return video, mask


def fun_condition(
    variant_fun: str | None,
    scaling_factor: float,
    latent: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """The channels a Fun model takes after the noisy latent, scaled like the reference.

    InP: ``cat([(1 - mask) * sf, latent * sf])`` (``mask`` ``[B, 1, T, h, w]`` on the latent grid,
    1 = unknown; ``latent`` the raw masked-video latent; text-to-video: mask ones, latent zeros);
    Control: ``latent * sf`` (the raw control-video latent).
    """
    if variant_fun == "inpaint":
        if latent is None or mask is None:
            raise ValueError(
                "a CogVideoX-Fun InP model needs a masked-video latent and a mask (for text-to-video: "
                "a zero latent and a mask of ones)"
            )
        if mask.shape[2:] != latent.shape[2:] or mask.shape[1] != 1:
            raise ValueError(
                f"the inpaint mask {tuple(mask.shape)} does not fit the masked-video latent {tuple(latent.shape)}"
            )
        return torch.cat([(1 - mask) * scaling_factor, latent * scaling_factor], dim=1)  # [B, 17, T, h, w]
    if variant_fun == "control":
        if latent is None:
            raise ValueError("a CogVideoX-Fun Control model needs a control-video latent")
        if mask is not None:
            raise ValueError("a CogVideoX-Fun Control model takes no inpaint mask")
        return latent * scaling_factor  # [B, 16, T, h, w]
    raise ValueError(f"not a CogVideoX-Fun conditioning kind: {variant_fun!r}")
