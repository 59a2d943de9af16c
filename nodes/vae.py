"""VAE nodes: frame-batched, tiled encode and decode with an automatic tile size and an
out-of-memory retry."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..cogvideox import frames as fr
from ..cogvideox import vae_tiling
from .common import CATEGORY, CheckedInputs, CogVideoXNodeError, VAEType

log = logging.getLogger(__name__)

TILING = ["auto", "off", "on"]
TILING_TOOLTIP = (
    "auto: tile only when the untiled pass would not fit in free memory (and retry tiled after an "
    "out-of-memory error); off: never tile; on: always tile with tile_size."
)


def _tile_inputs() -> list[io.Input]:
    return [
        io.Combo.Input("tiling", options=TILING, default="auto", tooltip=TILING_TOOLTIP),
        io.Int.Input(
            "tile_size",
            default=256,
            min=64,
            max=2048,
            step=32,
            tooltip="Tile side in pixels when tiling (overlaps are blended). Smaller uses less memory.",
        ),
    ]


def _vae_on_device(vae, memory_required: int, node: str = "CogVideoX VAE"):
    """Loads the VAE through ComfyUI's memory manager; returns (module, device, dtype)."""
    module = getattr(getattr(vae, "patcher", None), "model", None)
    # by its API, not isinstance: the library may be imported under two package names (the pack's, top-level)
    if not all(hasattr(module, name) for name in ("decode_tile", "encode_moments", "spatial_factor")):
        raise CogVideoXNodeError(
            node,
            f"this node takes the CogVideoX VAE (from CogVideoX VAE Loader), got {type(vae).__name__} "
            f"holding {type(module).__name__}: an image model's "
            "VAE cannot encode or decode CogVideoX video latents. Load the CogVideoX VAE with CogVideoX VAE Loader.",
        )
    mm.load_models_gpu([vae.patcher], memory_required=memory_required)
    module = vae.patcher.model
    return module, vae.patcher.load_device, next(module.parameters()).dtype


def _square(tile_size: int) -> vae_tiling.TileConfig:
    return vae_tiling.TileConfig(tile_size, tile_size)


def _tiled(node: str, module, dtype, mode: str, tile_size: int, hw: tuple[int, int], run, what: str):
    """``run(tile)`` untiled or tiled as ``mode`` says; after out-of-memory, retried tiled."""
    tile = None
    if mode == "on":
        tile = _square(tile_size)
    elif mode == "auto":
        budget = int(mm.get_free_memory(mm.vae_device()) * 0.8)
        tile = vae_tiling.auto_tile(module.config, hw[0], hw[1], budget, dtype=dtype)
    try:
        return run(tile)
    except mm.OOM_EXCEPTION:
        if mode == "off":
            raise
        retry = tile_size if tile is None else max(64, min(tile.tile_sample_min_height, tile_size) // 2)
        mm.soft_empty_cache(True)
        log.warning("%s: out of memory during VAE %s; retrying tiled with %dpx tiles", node, what, retry)
        return run(_square(retry))


def _interruptible_progress(total: int):
    """A frame-batch callback for the VAE passes: stops at a user's Cancel, moves the node's bar."""
    pbar = comfy.utils.ProgressBar(total)

    def progress(done: int, total: int) -> None:
        mm.throw_exception_if_processing_interrupted()  # Cancel stops the pass between frame batches
        pbar.update_absolute(done, total)

    return progress


def encode_video(node: str, vae, pixels: torch.Tensor, tiling: str = "auto", tile_size: int = 256) -> torch.Tensor:
    """Pixels ``[B, 3, F, H, W]`` in -1..1 -> raw latent ``[B, 16, T, h, w]`` on the intermediate device."""
    problems = fr.video_size_problems(pixels.shape[-1], pixels.shape[-2], pixels.shape[2])
    if problems:
        raise CogVideoXNodeError(node, "; ".join(problems))
    if not torch.isfinite(pixels).all():
        raise CogVideoXNodeError(
            node, "the images hold NaN or infinite values; check the node that makes them (the image is broken, "
            "this is not a precision problem of the VAE)"
        )
    module, device, dtype = _vae_on_device(vae, pixels.numel() * 4 * 64, node)
    progress = _interruptible_progress(pixels.shape[2])

    def run(tile):
        with torch.inference_mode():
            return module.encode(pixels.to(device, dtype), tile=tile, callback=progress)

    latent = _tiled(node, module, dtype, tiling, tile_size, pixels.shape[-2:], run, "encode")
    return latent.to(mm.intermediate_device(), torch.float32)


def decode_latent(node: str, vae, latent: torch.Tensor, tiling: str = "auto", tile_size: int = 256) -> torch.Tensor:
    """Raw latent ``[B, 16, T, h, w]`` -> pixels ``[B, 3, F, H, W]`` in -1..1 (float32, CPU)."""
    if latent.ndim != 5 or latent.shape[1] != 16:
        raise CogVideoXNodeError(
            node,
            f"expected a CogVideoX video LATENT [batch, 16, frames, height, width], got {tuple(latent.shape)}. "
            "Feed the output of CogVideoX Sampler or CogVideoX Empty Latent.",
        )
    b, _, t, h, w = latent.shape
    hw = (h * fr.SPATIAL_COMPRESSION, w * fr.SPATIAL_COMPRESSION)
    module, device, dtype = _vae_on_device(vae, b * fr.pixel_frames(t) * hw[0] * hw[1] * 3 * 64, node)

    progress = _interruptible_progress(t)

    def run(tile):
        with torch.inference_mode():
            return module.decode(latent.to(device, dtype), tile=tile, callback=progress)

    return _tiled(node, module, dtype, tiling, tile_size, hw, run, "decode").to("cpu", torch.float32)


class CogVideoXVAEDecode(CheckedInputs):
    DISPLAY_NAME = "CogVideoX VAE Decode"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXVAEDecode",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/latent",
            description="Decodes a CogVideoX video latent to IMAGE frames that any image node accepts. "
            "Frame-batched with the causal cache; tiled automatically when memory is short, with a tiled retry "
            "after out-of-memory.",
            inputs=[
                VAEType.Input("vae", tooltip="The CogVideoX VAE."),
                io.Latent.Input("samples", tooltip="The video latent from CogVideoX Sampler."),
                *_tile_inputs(),
            ],
            outputs=[
                io.Image.Output(
                    tooltip="The frames, [batch*frames, H, W, 3] in 0..1: all frames of the first video, then the "
                    "next; CogVideoX Save Video writes one file per video."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, tiling, tile_size):
        return cls.validation_answer(tiling=tiling, tile_size=tile_size)

    @classmethod
    def execute(cls, vae, samples, tiling, tile_size) -> io.NodeOutput:
        cls.check_inputs(tiling=tiling, tile_size=tile_size)
        video = decode_latent(cls.DISPLAY_NAME, vae, samples["samples"], tiling, tile_size)
        return io.NodeOutput(fr.video_to_images(video))


class CogVideoXVAEEncode(CheckedInputs):
    DISPLAY_NAME = "CogVideoX VAE Encode"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXVAEEncode",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/latent",
            description="Encodes IMAGE frames (4k+1 of them, sizes a multiple of 16) to a CogVideoX video LATENT.",
            inputs=[
                VAEType.Input("vae", tooltip="The CogVideoX VAE."),
                io.Image.Input("images", tooltip="Video frames: 4k+1 of them, width and height multiples of 16."),
                *_tile_inputs(),
            ],
            outputs=[
                io.Latent.Output(
                    tooltip="The raw video latent [B, 16, T, H/8, W/8] (B videos when the frames came from a "
                    "batch of CogVideoX VAE Decode, else 1)."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, tiling, tile_size):
        return cls.validation_answer(tiling=tiling, tile_size=tile_size)

    @classmethod
    def execute(cls, vae, images, tiling, tile_size) -> io.NodeOutput:
        cls.check_inputs(tiling=tiling, tile_size=tile_size)
        latent = encode_video(cls.DISPLAY_NAME, vae, fr.images_to_video(images), tiling, tile_size)
        return io.NodeOutput({"samples": latent})
