"""CogVideoX 3D causal VAE (parameter names of diffusers ``AutoencoderKLCogVideoX``).

Pixels are ``[B, 3, F, H, W]`` in [-1, 1]; latents are ``[B, C, T, h, w]`` in raw VAE space
(no scaling: that belongs to the variant, see ``pipeline.py``).

Videos run through the networks in frame batches (8 pixel frames to encode, 2 latent frames
to decode, the first batch also taking the remainder) with the causal conv cache carrying
the last frames of every conv across batches, the same batching as the reference. GroupNorm
statistics are taken per batch, so the batch size is part of the numerics: batches only see
the past through the cache (causal across batches), frames inside one batch share
statistics.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from torch import nn

from .configs import VAEConfig
from .ops import DEFAULT_OPERATIONS
from .vae_blocks import (
    Cache,
    CausalConv3d,
    DownBlock3D,
    MidBlock3D,
    SpatialNorm3D,
    UpBlock3D,
    causal_conv,
    decoded_frames,
    encoded_frames,
    fast_conv3d,
    norm_act_conv,
    temporal_levels,
)
from .vae_tiling import TileConfig, tiled_decode, tiled_encode

logger = logging.getLogger(__name__)

__all__ = ["BatchCallback", "CogVideoXVAE", "TileConfig", "frame_spans"]

BatchCallback = Callable[[int, int], None]  # (frame batches done, total) of the current tile


def frame_spans(n: int, batch: int | None) -> list[tuple[int, int]]:
    """Frame ranges of the batches: ``batch`` frames each, the first one takes the remainder."""
    if not batch or n <= batch:
        return [(0, n)]
    count, rem = divmod(n, batch)
    return [(0 if i == 0 else batch * i + rem, batch * (i + 1) + rem) for i in range(count)]


class Encoder3D(nn.Module):
    def __init__(self, cfg: VAEConfig, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        ch = cfg.block_out_channels
        levels = temporal_levels(cfg.temporal_compression_ratio)
        self.act = cfg.act_fn
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0], operations=ops)
        self.down_blocks = nn.ModuleList(
            DownBlock3D(
                ch[max(i - 1, 0)],
                ch[i],
                cfg.layers_per_block,
                cfg.norm_num_groups,
                cfg.norm_eps,
                cfg.act_fn,
                downsample=i < len(ch) - 1,
                compress_time=i < levels,
                operations=ops,
            )
            for i in range(len(cfg.down_block_types))
        )
        self.mid_block = MidBlock3D(ch[-1], cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn, operations=ops)
        self.norm_out = ops.GroupNorm(cfg.norm_num_groups, ch[-1], eps=1e-6)
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, operations=ops)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = causal_conv(self.conv_in, x, cache)
        for block in self.down_blocks:
            h = block(h, cache)
        h = self.mid_block(h, None, cache)
        return norm_act_conv(h, self.norm_out, "silu", self.conv_out, None, cache)


class Decoder3D(nn.Module):
    def __init__(self, cfg: VAEConfig, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        ch = tuple(reversed(cfg.block_out_channels))
        levels = temporal_levels(cfg.temporal_compression_ratio)
        zc = cfg.latent_channels
        self.conv_in = CausalConv3d(zc, ch[0], operations=ops)
        self.mid_block = MidBlock3D(
            ch[0], cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn, zq_channels=zc, operations=ops
        )
        self.up_blocks = nn.ModuleList(
            UpBlock3D(
                ch[max(i - 1, 0)],
                ch[i],
                cfg.layers_per_block + 1,
                cfg.norm_num_groups,
                cfg.norm_eps,
                cfg.act_fn,
                zq_channels=zc,
                upsample=i < len(ch) - 1,
                compress_time=i < levels,
                operations=ops,
            )
            for i in range(len(cfg.up_block_types))
        )
        self.norm_out = SpatialNorm3D(ch[-1], zc, cfg.norm_num_groups, ops)
        self.conv_out = CausalConv3d(ch[-1], cfg.out_channels, operations=ops)

    def forward(self, z: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = causal_conv(self.conv_in, z, cache)
        h = self.mid_block(h, z, cache)
        for block in self.up_blocks:
            h = block(h, z, cache)
        return norm_act_conv(h, self.norm_out, "silu", self.conv_out, z, cache)


class CogVideoXVAE(nn.Module):
    """The CogVideoX 3D causal VAE. Construction allocates nothing data dependent (meta-safe).

    ``operations`` (default ``torch.nn``) supplies the layer classes (see ``cogvideox.ops``).
    """

    def __init__(self, config: VAEConfig, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.config = config
        self.encoder = Encoder3D(config, ops)
        self.decoder = Decoder3D(config, ops)
        # Shapes as upstream (2 * out_channels); the released VAEs use neither.
        qc = 2 * config.out_channels
        conv3d = fast_conv3d(ops.Conv3d)
        self.quant_conv = conv3d(qc, qc, 1) if config.use_quant_conv else None
        self.post_quant_conv = (
            conv3d(config.out_channels, config.out_channels, 1) if config.use_post_quant_conv else None
        )

    # -- sizes -------------------------------------------------------------------------------
    @property
    def temporal_levels(self) -> int:
        return temporal_levels(self.config.temporal_compression_ratio)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _needs_grad(self, x: torch.Tensor) -> bool:
        """Autograd is kept for inputs that require grad, or a model in training mode.

        Otherwise (an ``eval()`` model, or no grad mode) the lean no-grad path runs.
        """
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or (self.training and any(p.requires_grad for p in self.parameters()))

    def _grad_context(self, x: torch.Tensor):
        return contextlib.nullcontext() if self._needs_grad(x) else torch.no_grad()

    # -- frame-batched passes (one tile) ------------------------------------------------------
    def _run_batched(self, x, batch, net, frames_out, callback: BatchCallback | None = None) -> torch.Tensor:
        spans = frame_spans(x.shape[2], batch)
        if len(spans) == 1:
            out = net(x, None)
            if callback is not None:
                callback(1, 1)
            return out
        cache: Cache = {}
        try:
            if torch.is_grad_enabled():
                parts = []
                for i, (a, b) in enumerate(spans):
                    parts.append(net(x[:, :, a:b], cache))
                    if callback is not None:
                        callback(i + 1, len(spans))
                return torch.cat(parts, dim=2)
            out = None
            t = 0
            total = sum(frames_out(b - a) for a, b in spans)
            for i, (a, b) in enumerate(spans):
                y = net(x[:, :, a:b], cache)
                if out is None:
                    out = y.new_empty(*y.shape[:2], total, *y.shape[3:])
                out[:, :, t : t + y.shape[2]] = y
                t += y.shape[2]
                del y
                if callback is not None:
                    callback(i + 1, len(spans))
            return out
        except BaseException:
            # a stopped pass (the callback raised, e.g. Cancel): whoever keeps the traceback keeps
            # this frame, so drop its tensors here (the causal cache, the partial output)
            parts = out = None
            raise
        finally:
            cache.clear()

    def _encode_net(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        h = self.encoder(x, cache)
        return self.quant_conv(h) if self.quant_conv is not None else h

    def _decode_net(self, z: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, cache)

    def encode_tile(
        self, x: torch.Tensor, frame_batch: int | None, callback: BatchCallback | None = None
    ) -> torch.Tensor:
        """Moments ``[B, 2C, T, h, w]`` of one (untiled) video, in frame batches.

        ``callback(done, total)`` runs after each batch (it may raise to stop the pass)."""
        levels = self.temporal_levels
        return self._run_batched(x, frame_batch, self._encode_net, lambda n: encoded_frames(n, levels), callback)

    def decode_tile(
        self, z: torch.Tensor, frame_batch: int | None, callback: BatchCallback | None = None
    ) -> torch.Tensor:
        """Pixels of one (untiled) latent video, in frame batches; ``callback(done, total)`` after each."""
        levels = self.temporal_levels
        return self._run_batched(z, frame_batch, self._decode_net, lambda n: decoded_frames(n, levels), callback)

    # -- public API ---------------------------------------------------------------------------
    def encode_moments(
        self,
        x: torch.Tensor,
        *,
        frame_batch: int | None = 8,
        tile: TileConfig | bool | None = None,
        callback: BatchCallback | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, logvar)``, each ``[B, C, T, h, w]``; logvar clamped to [-30, 20].

        ``callback(done, total)`` runs after every frame batch (of every tile), as in :meth:`decode`.
        """
        with self._grad_context(x):
            tile = TileConfig.resolve(tile, self.config)
            if tile is not None and tile.applies_to_sample(x.shape[-2:]):
                moments = tiled_encode(self, x, tile, frame_batch, callback)
            else:
                moments = self.encode_tile(x, frame_batch, callback)
            mean, logvar = moments.chunk(2, dim=1)
            return mean, logvar.clamp(-30.0, 20.0)

    def encode(
        self,
        x: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        frame_batch: int | None = 8,
        tile: TileConfig | bool | None = None,
        callback: BatchCallback | None = None,
    ) -> torch.Tensor:
        """Latent ``[B, C, T, h, w]``: the posterior mean, or ``mean + std * noise`` if ``sample``.

        The noise is ``torch.randn(mean.shape, generator=generator)`` drawn on the generator's
        device (then moved), as diffusers' ``DiagonalGaussianDistribution.sample`` draws it.
        """
        mean, logvar = self.encode_moments(x, frame_batch=frame_batch, tile=tile, callback=callback)
        if not sample:
            return mean if mean.is_contiguous() else mean.contiguous()
        with self._grad_context(mean):
            rand_device = generator.device if generator is not None else mean.device
            noise = torch.randn(mean.shape, generator=generator, device=rand_device, dtype=mean.dtype)
            return mean + torch.exp(0.5 * logvar) * noise.to(mean.device)

    def decode(
        self,
        z: torch.Tensor,
        *,
        frame_batch: int | None = 2,
        tile: TileConfig | bool | None = None,
        callback: BatchCallback | None = None,
    ) -> torch.Tensor:
        """Pixels ``[B, 3, F, H, W]`` (not clamped) from raw latents ``[B, C, T, h, w]``.

        ``callback(done, total)`` is called after every frame batch (of every tile); it may raise
        to stop the decode (e.g. a user's interrupt) and may report progress.
        """
        with self._grad_context(z):
            tile = TileConfig.resolve(tile, self.config)
            if tile is not None and tile.applies_to_latent(z.shape[-2:], self.spatial_factor):
                return tiled_decode(self, z, tile, frame_batch, callback)
            return self.decode_tile(z, frame_batch, callback)

    def forward(
        self,
        x: torch.Tensor,
        *,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        frame_batch: int | None = 8,
        decode_frame_batch: int | None = 2,
    ) -> torch.Tensor:
        """Reconstruction; keeps autograd in ``train()`` mode. Use ``encode_moments`` for a KL term."""
        z = self.encode(x, sample=sample_posterior, generator=generator, frame_batch=frame_batch)
        return self.decode(z, frame_batch=decode_frame_batch)
