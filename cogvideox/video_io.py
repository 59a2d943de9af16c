"""Writing videos with PyAV: h264 MP4 (default) and VP9 WebM, atomically.

The file is written under a temporary name in the destination folder and renamed when
complete, so a crash never leaves a half-written video under its final name.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    extension: str
    container: str
    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()
    container_options: tuple[tuple[str, str], ...] = ()
    crf_range: tuple[int, int] = (0, 51)  # what the codec accepts
    # The lowest crf that stays playable everywhere: x264's crf 0 is lossless, which only the
    # High 4:4:4 Predictive profile allows (browsers refuse it), so 0 is written as 1.
    playable_min_crf: int = 0


FORMATS: dict[str, VideoFormat] = {
    "mp4 (h264)": VideoFormat(
        "mp4",
        "mp4",
        "libx264",
        "yuv420p",
        options=(("profile", "high"),),
        container_options=(("movflags", "use_metadata_tags"),),
        crf_range=(0, 51),
        playable_min_crf=1,
    ),
    "webm (vp9)": VideoFormat("webm", "webm", "libvpx-vp9", "yuv420p", options=(("b", "0"),), crf_range=(0, 63)),
}


def crf_problems(format: str, crf: int) -> list[str]:
    """Why ``crf`` does not suit ``format`` (empty when it does)."""
    lo, hi = FORMATS[format].crf_range
    if lo <= crf <= hi:
        return []
    return [f"crf={crf} is out of range for {format}; use {lo} to {hi} (lower is better quality)"]


def fps_problems(fps: float) -> list[str]:
    """Why ``fps`` cannot be written (empty when it can): containers store the rate as a fraction."""
    if not 0 < fps <= MAX_FPS:
        return [f"fps={fps:g} is out of range; use more than 0 and at most {MAX_FPS:g}"]
    return []


MAX_FPS = 120.0


def write_video(
    path: str,
    frames: torch.Tensor,
    fps: float,
    *,
    format: str = "mp4 (h264)",
    crf: int = 19,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Write IMAGE frames ``[F, H, W, 3]`` in 0..1 to ``path`` atomically; returns ``path``.

    ``metadata`` values that are not strings are stored as JSON (ComfyUI stores ``prompt``
    and ``workflow`` this way; its frontend restores the graph from them).
    """
    fmt = FORMATS[format]
    problems = crf_problems(format, crf) + fps_problems(fps)
    if problems:
        raise ValueError("; ".join(problems))
    if crf < fmt.playable_min_crf:
        log.warning("crf %d for %s is lossless, which browsers cannot play; writing crf %d", crf, format,
                    fmt.playable_min_crf)
        crf = fmt.playable_min_crf
    if frames.ndim != 4 or frames.shape[-1] < 3 or frames.shape[0] == 0:
        raise ValueError(f"expected IMAGE frames [F, H, W, 3] with F >= 1, got shape {tuple(frames.shape)}")
    # yuv420p needs even sizes: pad the odd row/column by repeating the edge.
    rgb = (frames[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # [F, H, W, 3]
    f, h, w, _ = rgb.shape
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix="." + fmt.extension, dir=folder)
    os.close(fd)
    try:
        rate = Fraction(fps).limit_denominator(1000)
        with av.open(tmp, mode="w", format=fmt.container, options=dict(fmt.container_options)) as container:
            for key, value in (metadata or {}).items():
                container.metadata[key] = value if isinstance(value, str) else json.dumps(value)
            stream = container.add_stream(fmt.codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], fmt.pix_fmt
            stream.options = {"crf": str(crf), **dict(fmt.options)}
            for image in rgb:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a saved video is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    log.info("wrote %d frames %dx%d at %s fps to %s", f, w, h, fps, path)
    return path


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float
    metadata: dict[str, str]


def read_video(path: str) -> tuple[torch.Tensor, VideoInfo]:
    """Decode a video file to IMAGE frames ``[F, H, W, 3]`` in 0..1 and its info."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        meta = dict(container.metadata)
    images = torch.from_numpy(np.stack(frames)).float() / 255.0
    info = VideoInfo(len(frames), images.shape[2], images.shape[1], fps, meta)
    return images, info
