"""The VideoCrafter 3D U-Net (``lvdm.modules.networks.openaimodel3d.UNetModel``).

SD's 2D U-Net run per frame (frames folded into the batch), with a ``TemporalTransformer``
after every ``SpatialTransformer``, an extra temporal transformer (``init_attn``) after the
input convolution, optional temporal convolutions in every ResBlock, and the frame rate
embedded like a timestep and added to the time embedding (``fps_cond``).

Parameter names are the reference's (``input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip``,
``init_attn.0.proj_in``...), so ``model.diffusion_model.*`` of a released checkpoint loads
strictly after stripping the prefix.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ._shared import timestep_features
from .attention import SpatialTransformer, TemporalTransformer
from .blocks import Downsample, ResBlock, Upsample, group_norm_fp32
from .configs import UNetConfig


class Stack(nn.ModuleList):
    """The reference's ``TimestepEmbedSequential``: each layer gets what it needs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, batch: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = rearrange(x, "(b t) c h w -> b c t h w", b=batch)
                x = rearrange(layer(x), "b c t h w -> (b t) c h w")
            else:
                x = layer(x)
        return x


def _embedding_mlp(channels: int, dim: int, operations) -> nn.Sequential:
    return nn.Sequential(operations.Linear(channels, dim), nn.SiLU(), operations.Linear(dim, dim))


class VideoCrafterUNet(nn.Module):
    def __init__(self, config: UNetConfig, operations=nn):
        super().__init__()
        self.config = c = config
        emb_dim = c.time_embed_dim
        common = dict(num_groups=c.num_groups, dropout=c.dropout, operations=operations)

        def res(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, temporal_conv=c.temporal_conv, **common)

        def attention(ch: int) -> list[nn.Module]:
            heads = ch // c.num_head_channels
            layers: list[nn.Module] = [
                SpatialTransformer(
                    ch,
                    heads,
                    c.num_head_channels,
                    c.transformer_depth,
                    c.context_dim,
                    c.use_linear,
                    img_cross_attention=c.use_image_attention,
                    text_context_len=c.text_context_len,
                    **common,
                )
            ]
            if c.temporal_attention:
                layers.append(self._temporal(ch, heads, c.temporal_transformer_depth, c.use_linear, common))
            return layers

        self.time_embed = _embedding_mlp(c.model_channels, emb_dim, operations)
        if c.fps_cond:
            self.fps_embedding = _embedding_mlp(c.model_channels, emb_dim, operations)

        self.input_blocks = nn.ModuleList([Stack([operations.Conv2d(c.in_channels, c.model_channels, 3, padding=1)])])
        if c.addition_attention:
            # the reference passes neither use_linear nor temporal_transformer_depth here
            self.init_attn = Stack(
                [self._temporal(c.model_channels, c.init_attn_heads, c.transformer_depth, False, common)]
            )
        skips = [c.model_channels]
        ch, ds = c.model_channels, 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * c.model_channels)]
                ch = mult * c.model_channels
                if ds in c.attention_resolutions:
                    layers += attention(ch)
                self.input_blocks.append(Stack(layers))
                skips.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(Stack([Downsample(ch, operations=operations)]))
                skips.append(ch)
                ds *= 2

        self.middle_block = Stack([res(ch), *attention(ch), res(ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), mult * c.model_channels)]
                ch = mult * c.model_channels
                if ds in c.attention_resolutions:
                    layers += attention(ch)
                if level and i == c.num_res_blocks:
                    layers.append(Upsample(ch, operations=operations))
                    ds //= 2
                self.output_blocks.append(Stack(layers))

        self.out = nn.Sequential(
            operations.GroupNorm(c.num_groups, ch),
            nn.SiLU(),
            operations.Conv2d(c.model_channels, c.out_channels, 3, padding=1),
        )

    def _temporal(self, ch: int, heads: int, depth: int, use_linear: bool, common: dict) -> TemporalTransformer:
        c = self.config
        return TemporalTransformer(
            ch,
            heads,
            c.num_head_channels,
            depth,
            use_linear,
            relative_position=c.use_relative_position,
            temporal_length=c.temporal_length,
            **common,
        )

    def embed(self, timesteps: torch.Tensor, fps: torch.Tensor | int | None, dtype: torch.dtype) -> torch.Tensor:
        """``[B]`` timesteps (and frame rates) -> ``[B, 4 * model_channels]`` on the timesteps' device."""
        feats = timestep_features(timesteps, self.config.model_channels).to(dtype)
        emb = self.time_embed(feats)
        if self.config.fps_cond:
            fps = 16 if fps is None else fps  # the reference default
            if not torch.is_tensor(fps):
                fps = torch.full_like(timesteps, fps)
            fps_feats = timestep_features(fps.to(timesteps.device).reshape(-1), self.config.model_channels)
            emb = emb + self.fps_embedding(fps_feats.to(dtype))
        return emb

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        fps: torch.Tensor | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Noise prediction for ``x [B, C, T, H, W]`` at ``timesteps [B]``.

        context ``[B, L, context_dim]``: 77 text tokens, then the image tokens for I2V models.
        fps: ``[B]`` or an int (frame rate the video should have; 16 when omitted, as the reference).
        dtype: the compute dtype (default: the weights'); ComfyUI's manual casting passes its own.
        Returns ``x``'s dtype.
        """
        b, _, t, _, _ = x.shape
        dtype = dtype or self.time_embed[0].weight.dtype
        emb = self.embed(timesteps.to(x.device).reshape(-1).expand(b), fps, dtype)
        emb = emb.repeat_interleave(t, dim=0)  # [(B T), E]
        context = context.repeat_interleave(t, dim=0)  # [(B T), L, D]
        h = rearrange(x, "b c t h w -> (b t) c h w").to(dtype)
        context = context.to(x.device, dtype)
        skips = []
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, b)
            if index == 0 and self.config.addition_attention:
                h = self.init_attn(h, emb, context, b)
            skips.append(h)
        h = self.middle_block(h, emb, context, b)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, b)
        h = h.to(x.dtype)
        y = self.out[2](self.out[1](group_norm_fp32(self.out[0], h)))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)
