"""Saving video with av: h264 MP4 or VP9 WebM, the workflow embedded, a preview in the node."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy.cli_args import args
from comfy_api.latest import InputImpl, io

from ..cogvideox import frames as fr
from ..cogvideox.video_io import FORMATS, crf_problems, write_video
from .common import CATEGORY, CheckedInputs, CogVideoXNodeError

log = logging.getLogger(__name__)


def prefix_problems(filename_prefix: str) -> list[str]:
    """Names the file system or a file browser would mangle: control characters, hidden files."""
    bad = sorted({c for c in filename_prefix if ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return [
            f"filename_prefix {filename_prefix!r} contains control characters ({shown}); "
            "use letters, digits, '-', '_' and '/' for subfolders, e.g. 'CogVideoX/clip'"
        ]
    parts = filename_prefix.strip().replace("\\", "/").split("/")
    if "." in parts or parts[-1].startswith("."):  # '..' is safe_prefix's (it may stay inside)
        return [
            f"filename_prefix {filename_prefix!r} makes a hidden file or uses '.' as a folder; "
            "use a name like 'CogVideoX/clip'"
        ]
    return []


def safe_prefix(node: str, filename_prefix: str, output_dir: str) -> str:
    """``filename_prefix`` if it stays inside ``output_dir``; otherwise a clear error."""
    prefix = filename_prefix.strip() or "CogVideoX"
    if os.path.isabs(prefix) or "\x00" in prefix:
        raise CogVideoXNodeError(
            node, f"filename_prefix {filename_prefix!r} must be relative to the output folder, e.g. 'CogVideoX/clip'."
        )
    target = os.path.abspath(os.path.join(output_dir, prefix))
    if os.path.commonpath((os.path.abspath(output_dir), target)) != os.path.abspath(output_dir):
        raise CogVideoXNodeError(
            node,
            f"filename_prefix {filename_prefix!r} points outside the output folder; "
            "use a name like 'CogVideoX/clip' without '..'.",
        )
    return prefix


def _metadata(hidden) -> dict:
    """What the MP4 embeds: the prompt and the workflow (``hidden``: the executor's HiddenHolder, None
    when the node is called directly), nothing with --disable-metadata as core's SaveVideo."""
    if args.disable_metadata or hidden is None:
        return {}
    metadata = {} if hidden.prompt is None else {"prompt": hidden.prompt}
    return {**metadata, **(hidden.extra_pnginfo or {})}


def _write_videos(node: str, videos, prefix: str, output_dir: str, fps, format, crf, metadata) -> tuple[list, list]:
    """One file per video of the batch, each with its own counter: (the ``ui`` entries, the paths)."""
    saved, paths = [], []
    for video in videos:  # [F, H, W, 3]
        try:
            folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
                prefix, output_dir, video.shape[2], video.shape[1]
            )
            name = f"{filename}_{counter:05}_.{FORMATS[format].extension}"
            os.makedirs(folder, exist_ok=True)
            paths.append(write_video(os.path.join(folder, name), video, fps, format=format, crf=crf,
                                     metadata=metadata))
        except OSError as e:
            raise CogVideoXNodeError(
                node,
                f"cannot write under filename_prefix {prefix!r} in the output folder ({e.strerror or e}); "
                "shorten filename_prefix (at most 200 characters per folder or name) and make sure no file "
                "has the name of one of its folders",
            ) from e
        saved.append({"filename": name, "subfolder": subfolder, "type": "output"})
    return saved, paths


class CogVideoXSaveVideo(CheckedInputs):
    DISPLAY_NAME = "CogVideoX Save Video"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXSaveVideo",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/video",
            description="Saves IMAGE frames as a video in ComfyUI's output folder (h264 MP4 or VP9 WebM). The prompt "
            "and the workflow are embedded in the MP4, so dropping it on the canvas restores the graph (not when "
            "ComfyUI runs with --disable-metadata).",
            inputs=[
                io.Image.Input("images", tooltip="The frames, e.g. from CogVideoX VAE Decode."),
                io.Float.Input(
                    "fps",
                    default=8.0,
                    min=1.0,
                    max=120.0,
                    step=1.0,
                    tooltip="Frames per second: 8 for CogVideoX 1.0, 16 for 1.5.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="CogVideoX",
                    tooltip="File name prefix inside the output folder; may hold subfolders like 'videos/clip'.",
                ),
                io.Combo.Input("format", options=list(FORMATS), default="mp4 (h264)", tooltip="Container and codec."),
                io.Int.Input(
                    "crf",
                    default=19,
                    min=0,
                    max=63,
                    tooltip="Quality: lower is better and larger. h264: 0-51 (17-23 typical; 0, lossless, "
                    "is written as 1 so browsers can play it); VP9: 0-63 (24-35 typical).",
                ),
                io.Int.Input(
                    "frames_per_video",
                    default=0,
                    min=0,
                    max=fr.MAX_FRAMES,
                    optional=True,
                    tooltip="0: one file per video of the batch as CogVideoX VAE Decode made it (frames "
                    "from other nodes are one video). N > 0: cut the frames into videos of N frames each.",
                ),
            ],
            outputs=[io.Video.Output(tooltip="The saved video, for core video nodes.")],
            # the prompt and the workflow (hidden PROMPT and EXTRA_PNGINFO) come with is_output_node
            is_output_node=True,
        )

    CUSTOM_CHECKED = ("crf", "filename_prefix")

    @classmethod
    def input_problems(cls, values: dict) -> list[str]:
        problems = super().input_problems(values)
        if values.get("crf") is not None and values.get("format") in FORMATS:
            problems += crf_problems(values["format"], values["crf"])
        if values.get("filename_prefix") is not None:
            problems += prefix_problems(values["filename_prefix"])
        return problems

    @classmethod
    def validate_inputs(cls, fps, filename_prefix, format, crf, frames_per_video=0):
        return cls.validation_answer(
            fps=fps, filename_prefix=filename_prefix, format=format, crf=crf, frames_per_video=frames_per_video
        )

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, crf, frames_per_video=0) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(
            fps=fps, filename_prefix=filename_prefix, format=format, crf=crf, frames_per_video=frames_per_video
        )
        if frames_per_video and images.shape[0] % frames_per_video:
            raise CogVideoXNodeError(
                node,
                f"frames_per_video={frames_per_video} does not divide the {images.shape[0]} frames; use a divisor "
                f"of {images.shape[0]}, or 0 for the videos as CogVideoX VAE Decode made them",
            )
        videos = fr.split_videos(images, frames_per_video)
        output_dir = folder_paths.get_output_directory()
        prefix = safe_prefix(node, filename_prefix, output_dir)
        saved, paths = _write_videos(node, videos, prefix, output_dir, fps, format, crf, _metadata(cls.hidden))
        if len(videos) > 1:
            log.info("%s: wrote %d videos of %d frames", node, len(videos), videos[0].shape[0])
        # VIDEO is one video: the first of the batch (core video nodes take one)
        return io.NodeOutput(InputImpl.VideoFromFile(paths[0]), ui={"images": saved, "animated": (True,)})
