"""The CogVideoX VAE as a core ``VAE``: what core VAE Decode, VAE Encode, VAE Decode (Tiled) and
VAE Encode (Tiled) (and core video nodes that encode a start image) accept.

``CogVideoXCoreVAE`` is a ``comfy.sd.VAE`` whose codec is the library VAE held by the pack's
``COGVIDEOX_VAE`` (the same ModelPatcher: one copy of the weights in memory). Core's own
``decode`` / ``encode`` run unchanged around it; the codec calls the pack's decode and encode
(``nodes/vae.py``: frame batches with the causal cache, automatic spatial tiling, a tiled
retry after out-of-memory), so core VAE Decode gives the same frames as CogVideoX VAE Decode.

Latents are raw VAE space (no scaling factor), like the pack's LATENT and like every core
VAE's output: the model's ``latent_format`` scales them inside the sampler.

Frames: ``4k+1`` pixel frames <-> ``k+1`` latent frames (``upscale_ratio`` /
``downscale_ratio``); encoding keeps the first ``4k+1`` frames and centre-crops the size to a
multiple of 16 (core crops to the VAE's 8; the CogVideoX transformer needs 16).

Tiled passes: the spatial tiles go through the library's blended tiling
(``cogvideox/vae_tiling.py``, tile and overlap as core's nodes give them); the temporal tile
size becomes the frame batch of the causal pass. The causal cache carries every conv's past
frames across batches, so temporal tiles need no overlap (``overlap_t`` is accepted and unused)
and have no seams; the batch size only bounds memory.
"""

from __future__ import annotations

import math

import comfy.model_management as mm
import comfy.sd
import comfy.utils
import torch

from ..cogvideox import frames as fr
from ..cogvideox import vae_tiling
from .common import CogVideoXNodeError
from .vae import decode_latent, encode_video

DECODE_NODE = "VAE Decode (CogVideoX VAE)"
ENCODE_NODE = "VAE Encode (CogVideoX VAE)"
# Frame batches of the causal passes when core's nodes pass none (the pack's defaults).
DECODE_FRAME_BATCH = 2  # latent frames
ENCODE_FRAME_BATCH = 8  # pixel frames


def decode_peak_bytes(config, shape, dtype) -> int:
    """Estimated peak of a decode of a latent ``shape`` (ndim-agnostic, so a wrong latent still
    reaches the codec's clear error): the auto-tiling model's live activations of one frame
    batch (``vae_tiling.auto_tile``: 8 bytes x ``block_out_channels[0]`` x 9 frames per pixel)
    plus the float output video."""
    item = torch.empty((), dtype=dtype).element_size()
    batch = shape[0]
    t = shape[2] if len(shape) == 5 else 1
    pixels = shape[-2] * shape[-1] * fr.SPATIAL_COMPRESSION**2
    working = 8 * config.block_out_channels[0] * 9 * item
    return int(batch * pixels * (working + 3 * fr.pixel_frames(t) * 4))


def encode_peak_bytes(config, shape, dtype) -> int:
    """Estimated peak of an encode of pixels ``shape`` ``[B, 3, F, H, W]``: one frame batch of
    activations at full size (the first batch holds up to 8 + 3 frames) plus the input."""
    item = torch.empty((), dtype=dtype).element_size()
    batch, frames = shape[0], shape[2] if len(shape) == 5 else 1
    pixels = shape[-2] * shape[-1]
    return int(batch * pixels * (4 * config.block_out_channels[0] * 11 * item + 3 * frames * 4))


def _video_latent(node: str, z: torch.Tensor, channels: int) -> None:
    if z.ndim != 5 or z.shape[1] != channels:
        raise CogVideoXNodeError(
            node,
            f"this is the CogVideoX VAE: it decodes video latents [batch, {channels}, frames, height/8, width/8], "
            f"got {tuple(z.shape)} (an image model's latent?). Decode that latent with its own model's VAE, "
            "or feed a CogVideoX latent (CogVideoX Sampler, KSampler on the CogVideoX MODEL, CogVideoX Empty Latent).",
        )


def _crop_video(x: torch.Tensor) -> torch.Tensor:
    """Pixels ``[B, 3, F, H, W]`` -> the first 4k+1 frames, centre-cropped to multiples of 16."""
    f = fr.pixel_frames(fr.latent_frames(x.shape[2]))
    x = x[:, :, :f]
    for dim in (3, 4):
        size = x.shape[dim] // fr.SIZE_MULTIPLE * fr.SIZE_MULTIPLE
        if size == 0:
            raise CogVideoXNodeError(
                ENCODE_NODE, f"the image is {x.shape[4]}x{x.shape[3]}; the CogVideoX VAE needs at least 16x16 px"
            )
        x = x.narrow(dim, (x.shape[dim] - size) // 2, size)
    return x


class _Codec:
    """``first_stage_model`` of the core VAE: the pack's decode and encode on its VAE."""

    def __init__(self, vae):
        self.vae = vae  # the pack's COGVIDEOX_VAE (nodes.common.CogVideoXVAE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latent ``[B, 16, T, h, w]`` -> pixels ``[B, 3, 4T-3, 8h, 8w]`` in -1..1."""
        _video_latent(DECODE_NODE, z, self.vae.patcher.model.config.latent_channels)
        return decode_latent(DECODE_NODE, self.vae, z, "auto")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, F, H, W]`` in -1..1 -> raw latent (posterior mean) ``[B, 16, T, h, w]``."""
        return encode_video(ENCODE_NODE, self.vae, _crop_video(x), "auto")


class CogVideoXCoreVAE(comfy.sd.VAE):
    """A core VAE around the pack's CogVideoX VAE (see the module docstring).

    ``comfy.sd.VAE.__init__`` builds a network from a state dict; this class sets the same
    attributes around the already loaded library VAE instead, so every core method works.
    """

    def __init__(self, vae):
        module = vae.patcher.model
        config = module.config
        t = int(config.temporal_compression_ratio)
        s = module.spatial_factor
        self.cogvideox = vae
        self.config = config
        self.first_stage_model = _Codec(vae)
        self.patcher = vae.patcher
        self.device = vae.patcher.load_device
        self.vae_dtype = next(module.parameters()).dtype
        self.output_device = mm.intermediate_device()
        self.working_dtypes = [torch.bfloat16, torch.float16, torch.float32]
        self.latent_channels = config.latent_channels
        self.latent_dim = 3
        self.output_channels = 3
        self.upscale_ratio = (lambda a: max(0, a * t - (t - 1)), s, s)
        self.upscale_index_formula = (t, s, s)
        self.downscale_ratio = (lambda a: max(0, math.floor((a + t - 1) / t)), s, s)
        self.downscale_index_formula = (t, s, s)
        self.memory_used_decode = lambda shape, dtype: decode_peak_bytes(config, shape, dtype)
        self.memory_used_encode = lambda shape, dtype: encode_peak_bytes(config, shape, dtype)
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        self.disable_offload = False
        self.not_video = False
        self.extra_1d_channel = None
        self.crop_input = True
        self.size = comfy.model_management.module_size(module)

    def get_sd(self):
        return self.patcher.model.state_dict()

    # -- tiled passes through the library's tiling (core's generic tiler restarts the causal
    # cache at every temporal tile) -------------------------------------------------------------
    def _tile(self, tile_px: int | None, overlap_px: int | None) -> vae_tiling.TileConfig | None:
        if not tile_px:
            return None
        factor = min(0.5, max(0.0, (overlap_px or 0) / tile_px))
        return vae_tiling.TileConfig(tile_px, tile_px, factor, factor)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        """Core VAE Decode (Tiled): ``tile_x``/``tile_y``/``overlap`` in latent pixels, ``tile_t``
        in latent frames (the frame batch); returns ``[B, F, H, W, 3]`` in 0..1."""
        self.throw_exception_if_invalid()
        _video_latent(DECODE_NODE, samples, self.latent_channels)
        s = self.spacial_compression_decode()
        module = self.patcher.model
        mm.load_models_gpu([self.patcher], memory_required=self.memory_used_decode(samples.shape, self.vae_dtype))
        tile_px = None if tile_x is None else max(tile_x, tile_y or tile_x) * s
        tile = self._tile(tile_px, None if overlap is None else overlap * s)
        batch = max(1, int(tile_t)) if tile_t else DECODE_FRAME_BATCH
        pbar = comfy.utils.ProgressBar(samples.shape[2])

        def progress(done: int, total: int) -> None:
            mm.throw_exception_if_processing_interrupted()
            pbar.update_absolute(done, total)

        with torch.inference_mode():
            video = module.decode(
                samples.to(self.device, self.vae_dtype), frame_batch=batch, tile=tile, callback=progress
            )
        return self.process_output(video.to(self.output_device).float()).movedim(1, -1)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        """Core VAE Encode (Tiled): IMAGE frames ``[F, H, W, 3]``; tiles and ``tile_t`` in pixels."""
        self.throw_exception_if_invalid()
        x = _crop_video(self.process_input(pixel_samples).movedim(-1, 1).movedim(1, 0).unsqueeze(0))
        mm.load_models_gpu([self.patcher], memory_required=self.memory_used_encode(x.shape, self.vae_dtype))
        module = self.patcher.model
        tile_px = None if tile_x is None else max(tile_x, tile_y or tile_x)
        tile = self._tile(tile_px, overlap)
        t = int(self.config.temporal_compression_ratio)
        batch = max(t, int(tile_t) // t * t) if tile_t else ENCODE_FRAME_BATCH
        with torch.inference_mode():
            latent = module.encode(x.to(self.device, self.vae_dtype), frame_batch=batch, tile=tile)
        return latent.to(self.output_device).float()


def core_vae(vae) -> CogVideoXCoreVAE:
    """The core ``VAE`` output of the CogVideoX VAE Loader."""
    return CogVideoXCoreVAE(vae)
