"""Synthetic captioned clips (one coloured shape moving one way) and helpers to analyse videos.

The shipped tiny model (``tiny/``) is trained on these clips, and the known-answer tests use the
analysis helpers to check what it generates: the object's colour (nearest palette colour of the
non-background pixels) and the direction its centroid moves.

Videos are ``[3, F, H, W]`` in ``[-1, 1]``; everything is deterministic given the generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Colours in [0, 1] RGB; the background is a dark grey none of them is close to.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10),
}
BACKGROUND = (0.22, 0.22, 0.22)
SHAPES = ("square", "circle", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

FRAMES = 9
SIZE = 64
TINY_SIZE = 128  # the canvas the shipped tiny CogVideoX models are trained and run at
OBJECT_SIZE = (24.0, 30.0)  # side / diameter in pixels at 64x64 (scaled with the size)
TRAVEL = (14.0, 20.0)  # pixels moved from the first to the last frame at 64x64
# The earlier, smaller and faster objects: the data of the tiny VideoCrafter models (64x64).
SMALL_OBJECTS: dict[str, tuple[float, float]] = {"object_size": (14.0, 20.0), "travel": (20.0, 28.0)}


@dataclass(frozen=True)
class Clip:
    video: torch.Tensor  # [3, F, H, W] in [-1, 1]
    caption: str
    colour: str
    shape: str
    direction: str
    centres: torch.Tensor  # [F, 2] (x, y) in pixels, the drawn object's centre per frame


def caption_for(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def _to_signed(rgb: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32) * 2 - 1  # [3] in [-1, 1]


def _coverage(shape: str, xs: torch.Tensor, ys: torch.Tensor, cx: float, cy: float, size: float) -> torch.Tensor:
    """Soft (anti-aliased) coverage ``[H, W]`` in [0, 1] of a shape centred at (cx, cy)."""
    dx, dy = xs - cx, ys - cy
    half = size / 2
    if shape == "square":
        dist = torch.maximum(dx.abs(), dy.abs()) - half  # signed distance (Chebyshev)
    elif shape == "circle":
        dist = torch.sqrt(dx**2 + dy**2) - half
    elif shape == "triangle":  # pointing up, base at cy + half, apex at cy - half
        slope = 0.5  # half-width grows by 0.5 px per px down
        width = (dy + half) * slope
        side = (dx.abs() - width) / math.sqrt(1 + slope**2)
        dist = torch.maximum(torch.maximum(side, -(dy + half)), dy - half)
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    return (0.5 - dist).clamp(0.0, 1.0)


def render(
    colour: str,
    shape: str,
    centres: torch.Tensor,
    object_size: float,
    size: int = SIZE,
) -> torch.Tensor:
    """Draw one shape at ``centres[f] = (x, y)`` over the background: ``[3, F, H, W]`` in [-1, 1]."""
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}; one of {list(PALETTE)}")
    frames = centres.shape[0]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # [H, W] each
    bg = _to_signed(BACKGROUND).view(3, 1, 1)
    fg = _to_signed(PALETTE[colour]).view(3, 1, 1)
    out = torch.empty(3, frames, size, size)
    for f in range(frames):
        cov = _coverage(shape, xs, ys, float(centres[f, 0]), float(centres[f, 1]), object_size)  # [H, W]
        out[:, f] = bg + (fg - bg) * cov
    return out


def make_clip(
    generator: torch.Generator,
    *,
    colour: str | None = None,
    shape: str | None = None,
    direction: str | None = None,
    frames: int = FRAMES,
    size: int = SIZE,
    object_size: tuple[float, float] = OBJECT_SIZE,
    travel: tuple[float, float] = TRAVEL,
) -> Clip:
    """One clip; unspecified attributes, the start position, size and speed are drawn from ``generator``.

    ``object_size`` and ``travel`` are ranges in pixels at 64x64, scaled with ``size`` (the
    defaults: objects 24-30 px moving 14-20 px, the shipped tiny CogVideoX models' data, so that
    a shape spans enough latent pixels at 8x compression; ``SMALL_OBJECTS`` the earlier ranges).
    """

    def pick(options, given):
        if given is not None:
            if given not in options:
                raise ValueError(f"{given!r} is not one of {list(options)}")
            return given
        keys = list(options)
        return keys[int(torch.randint(len(keys), (1,), generator=generator))]

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    colour, shape, direction = pick(PALETTE, colour), pick(SHAPES, shape), pick(DIRECTIONS, direction)
    scale = size / SIZE
    obj = uniform(*object_size) * scale
    travel = uniform(*travel) * scale
    margin = obj / 2 + 1
    ux, uy = DIRECTIONS[direction]
    # the start is drawn so the object stays fully inside the frame for the whole clip
    lo_x = margin + (travel if ux < 0 else 0)
    hi_x = size - margin - (travel if ux > 0 else 0)
    lo_y = margin + (travel if uy < 0 else 0)
    hi_y = size - margin - (travel if uy > 0 else 0)
    x0, y0 = uniform(lo_x, hi_x), uniform(lo_y, hi_y)
    steps = torch.linspace(0, 1, frames)  # [F]
    centres = torch.stack([x0 + ux * travel * steps, y0 + uy * travel * steps], dim=1)  # [F, 2]
    video = render(colour, shape, centres, obj, size)
    return Clip(video, caption_for(colour, shape, direction), colour, shape, direction, centres)


def make_batch(generator: torch.Generator, batch: int, **kwargs) -> tuple[torch.Tensor, list[Clip]]:
    """``batch`` clips stacked: ``[B, 3, F, H, W]`` and the clips (captions and labels)."""
    clips = [make_clip(generator, **kwargs) for _ in range(batch)]
    return torch.stack([c.video for c in clips]), clips


# ------------------------------------------------------------------------------ analysis
def object_mask(frame: torch.Tensor, threshold: float = 0.35) -> torch.Tensor:
    """Pixels of a frame ``[3, H, W]`` (in [-1, 1]) that are not background: bool ``[H, W]``.

    A pixel is object when its RGB distance (in [0, 1] units) to the background exceeds ``threshold``.
    """
    rgb = (frame.float().clamp(-1, 1) + 1) / 2  # [3, H, W] in [0, 1]
    bg = torch.tensor(BACKGROUND).view(3, 1, 1)
    return (rgb - bg).norm(dim=0) > threshold


def dominant_colour(frame: torch.Tensor, threshold: float = 0.35) -> str | None:
    """The palette colour most object pixels of ``frame [3, H, W]`` are nearest to (None: no object)."""
    mask = object_mask(frame, threshold)
    if not mask.any():
        return None
    rgb = ((frame.float().clamp(-1, 1) + 1) / 2)[:, mask].T  # [N, 3]
    names = list(PALETTE)
    palette = torch.tensor([PALETTE[n] for n in names])  # [K, 3]
    nearest = torch.cdist(rgb, palette).argmin(dim=1)  # [N]
    counts = torch.bincount(nearest, minlength=len(names))
    return names[int(counts.argmax())]


def video_colour(video: torch.Tensor, threshold: float = 0.35) -> str | None:
    """The dominant palette colour over all frames of ``video [3, F, H, W]``."""
    strip = torch.cat(list(video.unbind(dim=1)), dim=-1)  # [3, F, H, W] -> [3, H, F*W], frames side by side
    return dominant_colour(strip, threshold)


def centroids(video: torch.Tensor, threshold: float = 0.35) -> torch.Tensor:
    """Object centroid (x, y) in pixels per frame of ``video [3, F, H, W]``: ``[F, 2]`` (NaN if none)."""
    _, frames, h, w = video.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij"
    )  # [H, W] each
    out = torch.full((frames, 2), float("nan"))
    for f in range(frames):
        mask = object_mask(video[:, f], threshold).float()  # [H, W]
        total = mask.sum()
        if total > 0:
            out[f, 0] = (xs * mask).sum() / total
            out[f, 1] = (ys * mask).sum() / total
    return out


def motion_direction(video: torch.Tensor, min_shift: float = 4.0, threshold: float = 0.35) -> str | None:
    """The direction the object's centroid moves from the first to the last frame.

    The dominant axis of the displacement decides; None when the object is missing at either end
    or moves less than ``min_shift`` pixels.
    """
    c = centroids(video, threshold)
    first, last = c[0], c[-1]
    if torch.isnan(first).any() or torch.isnan(last).any():
        return None
    dx, dy = (last - first).tolist()
    if max(abs(dx), abs(dy)) < min_shift:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images/videos in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a.float().clamp(-1, 1) - b.float().clamp(-1, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def first_frame_shift(frame: torch.Tensor, image: torch.Tensor, threshold: float = 0.35) -> float:
    """Distance in pixels between the object centroids of ``frame`` and ``image`` (both ``[3, H, W]``).

    ``inf`` when either has no object.
    """
    a = centroids(frame[:, None], threshold)[0]
    b = centroids(image[:, None], threshold)[0]
    if torch.isnan(a).any() or torch.isnan(b).any():
        return float("inf")
    return float((a - b).norm())
