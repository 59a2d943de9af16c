"""Frames at the boundary: ComfyUI IMAGE batches <-> VAE pixel videos, resizing, size rules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

# The 3D causal VAE compresses time 4x (the first frame alone) and space 8x; the
# transformer patchifies 2x2, so pixel sizes are multiples of 16 and frames are 4k+1.
TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8
SIZE_MULTIPLE = 16
MAX_SIDE = 8192
MAX_FRAMES = 1025


def latent_frames(frames: int) -> int:
    """Latent frames for a pixel frame count of 4k+1."""
    return (frames - 1) // TEMPORAL_COMPRESSION + 1


def pixel_frames(latent_frames: int) -> int:
    return (latent_frames - 1) * TEMPORAL_COMPRESSION + 1


def nearest_valid_frames(frames: int) -> int:
    return max(1, round((frames - 1) / TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION + 1)


def video_size_problems(width: int | None, height: int | None, frames: int | None = None) -> list[str]:
    """Everything wrong with a requested video size, each with its fix (empty when valid).

    ``None`` leaves that dimension out (e.g. a value ComfyUI only knows at run time).
    """
    problems = []
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if value <= 0:
            problems.append(f"{name}={value} must be positive; use a multiple of {SIZE_MULTIPLE} such as 480")
        elif value > MAX_SIDE:
            problems.append(f"{name}={value} is larger than {MAX_SIDE}; use at most {MAX_SIDE}")
        elif value % SIZE_MULTIPLE:
            lo = value // SIZE_MULTIPLE * SIZE_MULTIPLE
            fix = f"{lo} or {lo + SIZE_MULTIPLE}" if lo else f"{SIZE_MULTIPLE}"
            problems.append(f"{name}={value} is not a multiple of {SIZE_MULTIPLE}; use {fix}")
    if frames is not None:
        if frames <= 0:
            problems.append(f"frames={frames} must be positive; use 4k+1 frames such as 49")
        elif frames > MAX_FRAMES:
            problems.append(f"frames={frames} is more than {MAX_FRAMES}; use at most {MAX_FRAMES}")
        elif (frames - 1) % TEMPORAL_COMPRESSION:
            lo = (frames - 1) // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION + 1
            problems.append(
                f"frames={frames} is not 4k+1 (the VAE compresses time 4x after the first frame); "
                f"use {lo} or {lo + TEMPORAL_COMPRESSION}"
            )
    return problems


def trained_size_problems(config, latent_shape) -> list[str]:
    """Why a latent ``[B, C, T, h, w]`` does not fit a transformer with learned positions (5B-I2V).

    Learned positional embeddings exist only for the training size: the same resolution and at
    most the trained frame count. Said in pixels, as the user set them; empty when it fits or
    the model has no learned positions. ``config`` is a ``TransformerConfig``.
    """
    if not config.use_learned_positional_embeddings or len(latent_shape) != 5:
        return []
    t, h, w = latent_shape[2:]
    max_frames = config.sample_frames
    trained = f"{config.sample_width * SPATIAL_COMPRESSION}x{config.sample_height * SPATIAL_COMPRESSION}"
    got = f"{pixel_frames(t)} frames at {w * SPATIAL_COMPRESSION}x{h * SPATIAL_COMPRESSION}"
    if (h, w) != (config.sample_height, config.sample_width) or t > latent_frames(max_frames):
        return [
            f"this model has learned positional embeddings trained for {max_frames} frames at {trained} "
            f"(width x height) and fits only that size with at most {max_frames} frames; the latent is {got}. "
            f"Set width x height to {trained} and frames to {max_frames} or fewer (4k+1)"
        ]
    return []


# An IMAGE batch is frames only, [B*F, H, W, C]: CogVideoX VAE Decode puts the videos of a
# latent batch one after the other (all frames of video 0, then video 1, ...) and records how
# many videos the tensor holds in this attribute, so Save Video and the encoders can split it
# again. Nodes that make new tensors (core image nodes) drop it: their output is one video.
VIDEOS_ATTR = "cogvideox_videos"


def videos_in(images: torch.Tensor, frames_per_video: int = 0) -> int:
    """How many videos an IMAGE batch holds: ``frames_per_video`` if given (> 0), else what
    CogVideoX VAE Decode recorded, else one."""
    n = images.shape[0]
    if frames_per_video > 0:
        if n % frames_per_video:
            raise ValueError(f"{n} frames do not split into videos of {frames_per_video} frames")
        return n // frames_per_video
    count = getattr(images, VIDEOS_ATTR, 1)
    return count if isinstance(count, int) and count > 0 and n % count == 0 else 1


def split_videos(images: torch.Tensor, frames_per_video: int = 0) -> list[torch.Tensor]:
    """IMAGE ``[B*F, H, W, C]`` -> B IMAGE videos ``[F, H, W, C]`` (see :func:`videos_in`)."""
    return list(images.chunk(videos_in(images, frames_per_video)))


def images_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B*F, H, W, C]`` in 0..1 -> VAE pixel videos ``[B, 3, F, H, W]`` in -1..1.

    B is 1 unless the IMAGE came from CogVideoX VAE Decode of a batch (:data:`VIDEOS_ATTR`).
    """
    if images.ndim != 4:
        raise ValueError(f"expected an IMAGE batch [frames, height, width, channels], got shape {tuple(images.shape)}")
    b = videos_in(images)
    images = images[..., :3]  # drop alpha
    video = rearrange(images, "(b f) h w c -> b c f h w", b=b)  # [B, 3, F, H, W]
    return video * 2.0 - 1.0


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """VAE pixel videos ``[B, 3, F, H, W]`` in -1..1 -> ComfyUI IMAGE ``[B*F, H, W, 3]`` in 0..1,
    video after video, with the video count recorded (:data:`VIDEOS_ATTR`)."""
    images = rearrange(video, "b c f h w -> (b f) h w c")  # [B*F, H, W, 3]
    images = ((images.float() + 1.0) * 0.5).clamp_(0.0, 1.0)
    setattr(images, VIDEOS_ATTR, video.shape[0])
    return images


def fit_images(images: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """Resize an IMAGE batch ``[N, H, W, C]`` to ``[N, height, width, C]``.

    ``crop`` scales to cover and cuts the centre, ``pad`` scales to fit and pads with
    black (letterbox), ``stretch`` ignores the aspect ratio.
    """
    n, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    x = rearrange(images, "n h w c -> n c h w")  # [N, C, H, W]
    if mode == "stretch":
        x = _resize(x, height, width)
    elif mode in ("crop", "pad"):
        scale = max(height / h, width / w) if mode == "crop" else min(height / h, width / w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        x = _resize(x, rh, rw)
        if mode == "crop":
            top, left = (rh - height) // 2, (rw - width) // 2
            x = x[:, :, top : top + height, left : left + width]
        else:
            out = x.new_zeros(n, c, height, width)
            top, left = (height - rh) // 2, (width - rw) // 2
            out[:, :, top : top + rh, left : left + rw] = x
            x = out
    else:
        raise ValueError(f"unknown resize mode {mode!r}; use 'crop', 'pad' or 'stretch'")
    return rearrange(x, "n c h w -> n h w c").contiguous()  # [N, height, width, C]


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return out.clamp_(0.0, 1.0)


# CogVideoX-Fun trains on aspect-ratio buckets: (height, width) pairs of multiples of 32 around
# 512x512 pixels, scaled to the base resolution (512, 768 or 1024). The sizes are VideoX-Fun's
# (videox_fun/data/bucket_sampler.py: ASPECT_RATIO_512), matched by height/width ratio rounded to
# two decimals as its get_closest_ratio does.
FUN_BUCKETS_512: tuple[tuple[int, int], ...] = (
    (256, 1024), (256, 992), (256, 960), (256, 928), (288, 896), (288, 864), (288, 832),
    (320, 800), (320, 768), (352, 736), (352, 704), (352, 672), (384, 672), (384, 640),
    (416, 608), (416, 576), (448, 576), (448, 544), (480, 544), (480, 512), (512, 512),
    (512, 480), (544, 480), (544, 448), (576, 448), (576, 416), (608, 416), (640, 384),
    (672, 384), (704, 352), (736, 352), (768, 320), (800, 320), (832, 288), (864, 288),
    (896, 288), (928, 256), (960, 256), (992, 256), (1024, 256),
)  # fmt: skip


def nearest_fun_bucket(width: float, height: float, base_resolution: float = 512) -> tuple[int, int]:
    """``(width, height)`` of the Fun training bucket nearest to an aspect ratio, at a base resolution.

    Each side is the bucket's side scaled by ``base_resolution / 512`` and floored to a multiple of 16.
    """
    if width <= 0 or height <= 0 or base_resolution <= 0:
        raise ValueError(f"sizes must be positive, got {width}x{height} at base {base_resolution}")
    ratio = height / width
    bh, bw = min(FUN_BUCKETS_512, key=lambda hw: abs(round(hw[0] / hw[1], 2) - ratio))
    scale = base_resolution / 512
    return int(bw * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE, int(bh * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE
