"""The CogVideoX diffusion transformer (2B, 5B, 5B-I2V, 1.5-5B T2V and I2V).

Parameter names are those of diffusers ``CogVideoXTransformer3DModel`` so a diffusers state
dict loads strictly. ``forward`` is split into ``embed`` -> ``run_blocks`` -> ``final`` so
step caches (TeaCache-style) and block swapping can hook in without touching the math:

- ``model.step_cache`` (``None`` by default) is any callable ``(model, tokens) -> (video, text)``
  that replaces the plain loop over blocks; it can call ``model.first_block_modulated_input``
  to get the timestep-modulated input of block 0 and ``model.run_all_blocks`` to compute.
- ``block_forward(i, ...)`` moves its inputs to the block's device, so blocks can live on
  different devices.

Numerics: the residual streams, the layer norms, the adaptive modulation, the timestep MLP and
the rotary rotation run in float32; linear layers and attention run in the weight dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .attention import FeedForward, JointAttention, _layer_norm_fp32
from .compile import is_compiling
from .configs import TransformerConfig
from .embeddings import PatchEmbed, TimestepMLP, sincos_positions_3d, timestep_features
from .ops import DEFAULT_OPERATIONS, compute_dtype, linear_fp32, set_compute_dtype
from .rope import rotary_cos_sin
from .scratch import NO_SCRATCH, Scratch

logger = logging.getLogger(__name__)


@dataclass
class Tokens:
    """State entering the transformer blocks."""

    video: torch.Tensor  # [B, N, D] float32
    text: torch.Tensor  # [B, L, D] float32
    temb: torch.Tensor  # [B, time_embed_dim] float32
    rope: tuple[torch.Tensor, torch.Tensor] | None  # cos, sin [N, head_dim] float32
    grid: tuple[int, int, int]  # token grid (T', H', W')


StepCache = Callable[["CogVideoXTransformer", Tokens], tuple[torch.Tensor, torch.Tensor]]


def _modulate_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` (one pass, in place when autograd is off)."""
    if torch.is_grad_enabled():
        return torch.addcmul(shift, x, 1 + scale)
    return torch.addcmul(shift, x, 1 + scale, out=x)


def _gated_residual_(hs: torch.Tensor, out: torch.Tensor, gates: tuple[torch.Tensor, torch.Tensor], text_len: int):
    """``hs + gate * out`` with the text gate on the first ``text_len`` tokens, the video gate after."""
    t_gate, gate = gates
    if torch.is_grad_enabled():
        text = hs[:, :text_len] + t_gate * out[:, :text_len]
        return torch.cat([text, hs[:, text_len:] + gate * out[:, text_len:]], dim=1)
    hs[:, :text_len].addcmul_(t_gate, out[:, :text_len])
    hs[:, text_len:].addcmul_(gate, out[:, text_len:])
    return hs


class AdaNormZero(nn.Module):
    """LayerNorm + per-sample shift/scale for video and text, and their residual gates."""

    def __init__(self, cond_dim: int, dim: int, affine: bool, eps: float, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.silu = nn.SiLU()
        self.linear = ops.Linear(cond_dim, 6 * dim)
        self.norm = ops.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def modulation(self, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """shift, scale, gate, text shift, text scale, text gate: ``[B, 1, D]`` float32 each."""
        mod = linear_fp32(self.linear, self.silu(temb.float()))  # [B, 6D]
        return mod[:, None, :].chunk(6, dim=-1)

    def video(self, video: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Normalise and modulate the video tokens alone ``[B, N, D]`` -> float32 (step-cache indicator)."""
        shift, scale = self.modulation(temb)[:2]  # [B, 1, D] each
        return _modulate_(_layer_norm_fp32(self.norm, video), scale, shift)

    def joint(self, hs: torch.Tensor, temb: torch.Tensor, text_len: int, scratch: Scratch = NO_SCRATCH):
        """Normalise the joint stream ``hs[B, L+N, D]`` (text first) -> (modulated, (text gate, gate))."""
        shift, scale, gate, t_shift, t_scale, t_gate = self.modulation(temb)
        x = _layer_norm_fp32(self.norm, hs, scratch)  # [B, L+N, D] float32
        if torch.is_grad_enabled():
            x = torch.cat([_modulate_(x[:, :text_len], t_scale, t_shift), _modulate_(x[:, text_len:], scale, shift)], 1)
        else:
            _modulate_(x[:, :text_len], t_scale, t_shift)
            _modulate_(x[:, text_len:], scale, shift)
        return x, (t_gate, gate)


class CogVideoXBlock(nn.Module):
    """One block on the joint residual stream ``hs[B, L+N, D]`` float32 (text tokens first).

    Without autograd the stream is updated in place (no per-block concatenation or split), and
    the block's temporaries come from and go back to ``scratch`` (see ``cogvideox.scratch``).
    ``execution_device`` (None: where the weights are) is where the block computes; block swap
    sets it while the weights wait on another device between calls.
    """

    def __init__(self, cfg: TransformerConfig, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        dim = cfg.inner_dim
        affine, eps = cfg.norm_elementwise_affine, cfg.norm_eps
        self.norm1 = AdaNormZero(cfg.time_embed_dim, dim, affine, eps, ops)
        self.attn1 = JointAttention(
            dim, cfg.num_attention_heads, cfg.attention_head_dim, cfg.attention_bias, operations=ops
        )
        self.norm2 = AdaNormZero(cfg.time_embed_dim, dim, affine, eps, ops)
        self.ff = FeedForward(dim, cfg.activation_fn, cfg.dropout, operations=ops)
        self.execution_device: torch.device | None = None

    def device(self, default: torch.device) -> torch.device:
        """Where the block computes: ``execution_device`` when set (block swap), else ``default``
        (the device of its input; a partially loaded block's weights may wait elsewhere)."""
        return self.execution_device or default

    def forward(
        self,
        hs: torch.Tensor,
        temb: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        text_len: int,
        scratch: Scratch = NO_SCRATCH,
    ) -> torch.Tensor:
        if is_compiling() or torch.is_grad_enabled():
            scratch = NO_SCRATCH  # compiled graphs and autograd manage their own buffers
        x, gates = self.norm1.joint(hs, temb, text_len, scratch)
        out = self.attn1(x, text_len, rope, scratch)
        scratch.give(x)
        hs = _gated_residual_(hs, out, gates, text_len)  # [B, L+N, D]
        scratch.give(out)
        x, gates = self.norm2.joint(hs, temb, text_len, scratch)
        out = self.ff(x, scratch)
        scratch.give(x)
        hs = _gated_residual_(hs, out, gates, text_len)  # [B, L+N, D]
        scratch.give(out)
        return hs


class FinalNorm(nn.Module):
    """Adaptive LayerNorm of the output (shift first, then scale)."""

    def __init__(self, cond_dim: int, dim: int, affine: bool, eps: float, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.silu = nn.SiLU()
        self.linear = ops.Linear(cond_dim, 2 * dim)
        self.norm = ops.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        mod = linear_fp32(self.linear, self.silu(temb.float()))  # [B, 2D]
        shift, scale = mod[:, None, :].chunk(2, dim=-1)  # [B, 1, D] each
        return _modulate_(_layer_norm_fp32(self.norm, x), scale, shift)


class CogVideoXTransformer(nn.Module):
    """The transformer; ``operations`` (default ``torch.nn``) supplies its layer classes (see
    ``cogvideox.ops``), ``compute_dtype`` the dtype that casting layers (e.g. ``comfy.ops.manual_cast``
    with fp8 weights) are fed (None: each layer's weight dtype)."""

    def __init__(self, config: TransformerConfig, operations=None, compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        cfg = config
        if cfg.out_channels is None:
            raise ValueError("TransformerConfig.out_channels must be set (16 for every released model)")
        if cfg.use_learned_positional_embeddings and not cfg.use_rotary_positional_embeddings:
            raise ValueError("learned positional embeddings are only supported together with rotary embeddings")
        if cfg.ofs_embed_dim and cfg.ofs_embed_dim != cfg.time_embed_dim:
            raise ValueError(
                f"ofs_embed_dim ({cfg.ofs_embed_dim}) must equal time_embed_dim ({cfg.time_embed_dim}): "
                "the ofs embedding is added to the timestep embedding"
            )
        self.config = cfg
        dim = cfg.inner_dim
        learned_len = None
        if cfg.use_learned_positional_embeddings:
            learned_len = cfg.max_text_seq_length + self._trained_patches()
        self.patch_embed = PatchEmbed(
            cfg.in_channels,
            dim,
            cfg.text_embed_dim,
            cfg.patch_size,
            cfg.patch_size_t,
            cfg.patch_bias,
            learned_len,
            operations=ops,
        )
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.time_embedding = TimestepMLP(dim, cfg.time_embed_dim, cfg.timestep_activation_fn, ops)
        self.ofs_embedding = None
        if cfg.ofs_embed_dim:
            self.ofs_embedding = TimestepMLP(cfg.ofs_embed_dim, cfg.ofs_embed_dim, cfg.timestep_activation_fn, ops)
        self.transformer_blocks = nn.ModuleList([CogVideoXBlock(cfg, ops) for _ in range(cfg.num_layers)])
        self.norm_final = ops.LayerNorm(dim, cfg.norm_eps, cfg.norm_elementwise_affine)
        self.norm_out = FinalNorm(cfg.time_embed_dim, dim, cfg.norm_elementwise_affine, cfg.norm_eps, ops)
        self.proj_out = ops.Linear(dim, cfg.patch_size**2 * (cfg.patch_size_t or 1) * cfg.out_channels)
        set_compute_dtype(self, compute_dtype)
        self.step_cache: StepCache | None = None
        self.compute_dtype = compute_dtype
        self._pos_cache: dict[tuple, object] = {}

    @property
    def in_channels(self) -> int:
        """Input channels (``config.in_channels``), as core ComfyUI networks expose them (core's
        RenormCFG reads ``diffusion_model.in_channels``)."""
        return self.config.in_channels

    # ----------------------------------------------------------------- geometry
    def _trained_grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') of the training size (``sample_*`` of the config)."""
        cfg = self.config
        latent_frames = (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1
        return latent_frames, cfg.sample_height // cfg.patch_size, cfg.sample_width // cfg.patch_size

    def _trained_patches(self) -> int:
        t, h, w = self._trained_grid()
        return t * h * w

    def token_grid(self, x_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Validate a latent shape ``[B, C, T, H, W]`` and return its token grid (T', H', W')."""
        cfg = self.config
        if len(x_shape) != 5:
            raise ValueError(
                f"expected a latent video [B, C, T, H, W], got shape {tuple(x_shape)}; "
                "an image latent [B, C, H, W] needs a frame axis (unsqueeze(2))"
            )
        _, c, t, h, w = x_shape
        if c != cfg.in_channels:
            hint = (
                "this is an image-to-video model: concatenate the image latent on channels"
                if cfg.in_channels > c
                else "this is a text-to-video model: do not concatenate an image latent"
            )
            raise ValueError(f"the model expects {cfg.in_channels} latent channels, got {c}; {hint}")
        p, pt = cfg.patch_size, cfg.patch_size_t or 1
        if h % p or w % p:
            raise ValueError(
                f"latent height/width must be multiples of the patch size {p}, got {h}x{w} "
                f"(pixel size must be a multiple of {8 * p})"
            )
        if t % pt:
            raise ValueError(
                f"this model (CogVideoX 1.5) needs a latent frame count divisible by {pt}, got {t}; "
                "pad the latent (e.g. prepend a copy of the first latent frame) and drop it after decoding"
            )
        return t // pt, h // p, w // p

    def positions(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor | None:
        """Absolute positions added to the video tokens ``[N, D]`` float32, or None (RoPE-only)."""
        cfg = self.config
        if cfg.use_learned_positional_embeddings:
            trained = self._trained_grid()
            if grid[1:] != trained[1:] or grid[0] > trained[0]:
                raise ValueError(
                    f"this model has learned positional embeddings for a token grid of at most "
                    f"{trained[0]} frames x {trained[1]} x {trained[2]} (latent {trained[1] * cfg.patch_size}"
                    f"x{trained[2] * cfg.patch_size}, video {trained[2] * cfg.patch_size * 8}x"
                    f"{trained[1] * cfg.patch_size * 8}), got {grid[0]} x {grid[1]} x {grid[2]}; "
                    "generate at the trained resolution and at most the trained frame count"
                )
            # Shorter clips use the leading frames of the learned table (as the original SAT code).
            n = grid[0] * grid[1] * grid[2]
            table = self.patch_embed.pos_embedding[0, cfg.max_text_seq_length : cfg.max_text_seq_length + n]
            return table.to(device=device, dtype=torch.float32)  # [N, D]
        if cfg.use_rotary_positional_embeddings:
            return None
        key = ("sincos", grid, device)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_positions_3d(
                cfg.inner_dim,
                *grid,
                spatial_scale=cfg.spatial_interpolation_scale,
                temporal_scale=cfg.temporal_interpolation_scale,
                device=device,
            )
        return self._pos_cache[key]

    def rotary(self, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos/sin tables ``[N, head_dim]`` for the grid, cached per grid and device."""
        cfg = self.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        key = ("rope", grid, device)
        if key not in self._pos_cache:
            base_hw = (cfg.sample_height // cfg.patch_size, cfg.sample_width // cfg.patch_size)
            self._pos_cache[key] = rotary_cos_sin(
                cfg.attention_head_dim, *grid, base_hw, slice_grid=cfg.patch_size_t is not None, device=device
            )
        return self._pos_cache[key]

    # ------------------------------------------------------------------ stages
    def _as_batch(self, value, batch: int, device: torch.device, what: str) -> torch.Tensor:
        v = torch.as_tensor(value, device=device)
        if v.ndim == 0:
            v = v.expand(batch)
        if v.ndim != 1 or v.shape[0] not in (1, batch):
            raise ValueError(f"{what} must be a scalar or a [B] tensor with B={batch}, got shape {tuple(v.shape)}")
        return v.expand(batch)

    def embed_time(self, timestep, batch: int, device: torch.device, ofs=None) -> torch.Tensor:
        cfg = self.config
        t = self._as_batch(timestep, batch, device, "timestep")
        temb = self.time_embedding(timestep_features(t, cfg.inner_dim, cfg.flip_sin_to_cos, cfg.freq_shift))
        if self.ofs_embedding is not None:
            if ofs is None:
                raise ValueError(
                    "this model (CogVideoX 1.5 image-to-video) has an ofs embedding: pass ofs "
                    "(the reference value is 2.0, Variant.ofs)"
                )
            o = self._as_batch(ofs, batch, device, "ofs")
            feats = timestep_features(o, cfg.ofs_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
            temb = temb + self.ofs_embedding(feats)
        return temb  # [B, time_embed_dim] float32

    def embed(self, x: torch.Tensor, timestep, context: torch.Tensor, ofs=None) -> Tokens:
        cfg = self.config
        grid = self.token_grid(x.shape)
        if context.ndim != 3 or context.shape[-1] != cfg.text_embed_dim or context.shape[0] != x.shape[0]:
            raise ValueError(
                f"expected text embeddings [B={x.shape[0]}, L, {cfg.text_embed_dim}], "
                f"got {tuple(context.shape)}; "
                f"this model uses a {cfg.text_embed_dim}-wide text encoder (T5-XXL for released models)"
            )
        if cfg.use_learned_positional_embeddings and context.shape[1] != cfg.max_text_seq_length:
            raise ValueError(
                f"this model has learned positions for exactly {cfg.max_text_seq_length} text tokens, "
                f"got {context.shape[1]}; pad the prompt embeddings to {cfg.max_text_seq_length} tokens"
            )
        temb = self.embed_time(timestep, x.shape[0], x.device, ofs)
        video = self.patch_embed.embed_video(x).float()  # [B, N, D]
        text = self.patch_embed.embed_text(context).float()  # [B, L, D]
        pos = self.positions(grid, x.device)
        if pos is not None:
            video = video + pos[None]
            if cfg.use_learned_positional_embeddings:
                text = text + self.patch_embed.pos_embedding[:, : cfg.max_text_seq_length].float()
        video = self.embedding_dropout(video)
        text = self.embedding_dropout(text)
        return Tokens(video=video, text=text, temb=temb, rope=self.rotary(grid, x.device), grid=grid)

    def block_forward(
        self,
        index: int,
        hs: torch.Tensor,
        temb: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        text_len: int,
        scratch: Scratch = NO_SCRATCH,
    ) -> torch.Tensor:
        """Run block ``index`` on the joint stream ``hs[B, L+N, D]`` on the block's device."""
        block = self.transformer_blocks[index]
        dev = block.device(hs.device)
        if hs.device != dev:
            hs, temb = hs.to(dev), temb.to(dev)
            rope = None if rope is None else (rope[0].to(dev), rope[1].to(dev))
        return block(hs, temb, rope, text_len, scratch)

    def first_block_modulated_input(self, tokens: Tokens) -> torch.Tensor:
        """Timestep-modulated video tokens of block 0 ``[B, N, D]`` float32 (for step caches)."""
        block = self.transformer_blocks[0]
        dev = block.device(tokens.video.device)
        return block.norm1.video(tokens.video.to(dev), tokens.temb.to(dev))

    def run_all_blocks(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        text_len = tokens.text.shape[1]
        hs = torch.cat([tokens.text, tokens.video], dim=1)  # [B, L+N, D] float32, a fresh buffer
        scratch = Scratch()  # dropped after the last block (blocks ignore it under autograd)
        for i in range(len(self.transformer_blocks)):
            hs = self.block_forward(i, hs, tokens.temb, tokens.rope, text_len, scratch)
        return hs[:, text_len:], hs[:, :text_len]  # video [B, N, D], text [B, L, D]

    def run_blocks(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        if self.step_cache is not None:
            return self.step_cache(self, tokens)
        return self.run_all_blocks(tokens)

    def final(self, video: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        cfg = self.config
        temb = temb.to(video.device)  # the last block's device (the input's, or block swap's compute device)
        h = _layer_norm_fp32(self.norm_final, video)
        h = self.norm_out(h, temb)
        h = self.proj_out(h.to(compute_dtype(self.proj_out)))  # [B, N, C*pt*p*p]
        p, pt = cfg.patch_size, cfg.patch_size_t or 1
        t, gh, gw = grid
        return rearrange(
            h, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=t, h=gh, w=gw, pt=pt, ph=p, pw=p
        )  # [B, C_out, T, H, W]

    def forward(self, x: torch.Tensor, timestep, context: torch.Tensor, ofs=None) -> torch.Tensor:
        """Predict v for ``x[B, C, T, H, W]`` -> ``[B, out_channels, T, H, W]``.

        ``timestep`` is a scalar or ``[B]`` (int or float), ``context`` is ``[B, L, text_embed_dim]``,
        ``ofs`` is required by 1.5 image-to-video models (2.0). The output has the dtype of
        ``proj_out`` (the model dtype).
        """
        tokens = self.embed(x, timestep, context, ofs)
        video, _ = self.run_blocks(tokens)
        return self.final(video, tokens.temb, tokens.grid)
