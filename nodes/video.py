"""Saving video with av: h264 MP4 or VP9 WebM, the workflow embedded, a preview in the node."""

from __future__ import annotations

import os

import folder_paths
from comfy.cli_args import args

from ..cogvideox.video_io import FORMATS, write_video
from .common import CATEGORY, CogVideoXNodeError

try:  # VIDEO, for core video nodes: comfy_api.latest exists in ComfyUI >= 0.3.4x
    from comfy_api.latest import InputImpl

    VideoFromFile = InputImpl.VideoFromFile
except ImportError:  # pragma: no cover - older hosts
    VideoFromFile = None


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


class CogVideoXSaveVideo:
    DISPLAY_NAME = "CogVideoX Save Video"
    DESCRIPTION = (
        "Saves IMAGE frames as a video in ComfyUI's output folder (h264 MP4 or VP9 WebM). The prompt and the "
        "workflow are embedded in the MP4, so dropping it on the canvas restores the graph (not when ComfyUI "
        "runs with --disable-metadata)."
    )
    CATEGORY = f"{CATEGORY}/video"
    FUNCTION = "execute"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VIDEO",) if VideoFromFile is not None else ()
    OUTPUT_TOOLTIPS = ("The saved video, for core video nodes.",) if VideoFromFile is not None else ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, e.g. from CogVideoX VAE Decode."}),
                "fps": (
                    "FLOAT",
                    {
                        "default": 8.0,
                        "min": 1.0,
                        "max": 120.0,
                        "step": 1.0,
                        "tooltip": "Frames per second: 8 for CogVideoX 1.0, 16 for 1.5.",
                    },
                ),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "CogVideoX",
                        "tooltip": "File name prefix inside the output folder; may hold subfolders like 'videos/clip'.",
                    },
                ),
                "format": (list(FORMATS), {"default": "mp4 (h264)", "tooltip": "Container and codec."}),
                "crf": (
                    "INT",
                    {
                        "default": 19,
                        "min": 0,
                        "max": 51,
                        "tooltip": "Quality: lower is better and larger (h264: 17-23 typical).",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def execute(self, images, fps, filename_prefix, format, crf, prompt=None, extra_pnginfo=None):
        output_dir = folder_paths.get_output_directory()
        prefix = safe_prefix(self.DISPLAY_NAME, filename_prefix, output_dir)
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            prefix, output_dir, images.shape[2], images.shape[1]
        )
        os.makedirs(folder, exist_ok=True)
        name = f"{filename}_{counter:05}_.{FORMATS[format].extension}"
        metadata = {}
        if not args.disable_metadata:  # as core's SaveImage / SaveVideo honour the flag
            if prompt is not None:
                metadata["prompt"] = prompt
            for key, value in (extra_pnginfo or {}).items():
                metadata[key] = value
        path = write_video(os.path.join(folder, name), images, fps, format=format, crf=crf, metadata=metadata)
        ui = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        result = (VideoFromFile(path),) if VideoFromFile is not None else ()
        return {"ui": ui, "result": result}
