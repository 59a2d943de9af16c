"""VideoCrafter configurations as data, and the released variants told apart by their weights.

Field names are those of the reference YAML files (``configs/inference_*.yaml``:
``model.params`` for the schedule, ``unet_config.params`` for the U-Net), so a config loads with
``UNetConfig.from_dict(yaml["model"]["params"]["unet_config"]["params"])``; unknown keys are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._shared import _FromDict


@dataclass(frozen=True)
class UNetConfig(_FromDict):
    """``lvdm.modules.networks.openaimodel3d.UNetModel`` (defaults: the released 512 models)."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64
    transformer_depth: int = 1
    temporal_transformer_depth: int = 1
    context_dim: int = 1024
    use_linear: bool = True
    temporal_conv: bool = False
    temporal_attention: bool = True
    temporal_selfatt_only: bool = True
    use_relative_position: bool = False
    use_causal_attention: bool = False
    temporal_length: int = 16
    addition_attention: bool = True
    use_image_attention: bool = False
    fps_cond: bool = False
    text_context_len: int = 77  # context tokens before the image tokens (reference: fixed 77)
    init_attn_heads: int = 8  # the reference builds ``init_attn`` with 8 heads of num_head_channels
    num_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self):
        if self.use_causal_attention:
            raise ValueError("use_causal_attention is not supported (no released VideoCrafter model uses it)")
        if not self.temporal_selfatt_only:
            raise ValueError("temporal_selfatt_only=False is not supported (no released VideoCrafter model uses it)")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels


@dataclass(frozen=True)
class ScheduleConfig(_FromDict):
    """The diffusion schedule of ``lvdm.models.ddpm3d.LatentDiffusion``.

    Betas are linear in sqrt-space from ``linear_start`` to ``linear_end`` (the reference calls
    it "linear"). With ``use_scale`` the forward process is
    ``x_t = sqrt(abar_t) * s_t * x0 + sqrt(1 - abar_t) * eps`` where ``s_t`` ramps linearly from
    ``scale_a`` to ``scale_b`` over the first ``mid_step`` steps and stays at ``scale_b``.
    ``fix_scale_bug`` only changes the length of the reference's table (1400 instead of 1000
    entries); every value at ``t < timesteps`` is the same either way.
    """

    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    use_scale: bool = False
    scale_a: float = 1.0
    scale_b: float = 0.3
    mid_step: int = 400
    fix_scale_bug: bool = False
    scale_factor: float = 0.18215  # the SD VAE latent scale


@dataclass(frozen=True)
class ResamplerConfig(_FromDict):
    """``lvdm.modules.encoders.ip_resampler.Resampler`` as the I2V model builds it."""

    dim: int = 1024
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16
    embedding_dim: int = 1280
    output_dim: int = 1024
    ff_mult: int = 4


@dataclass(frozen=True)
class Variant:
    """A released model: its U-Net, schedule, image projection and the reference's defaults."""

    name: str
    unet: UNetConfig
    schedule: ScheduleConfig
    resampler: ResamplerConfig | None = None
    height: int = 320  # pixels
    width: int = 512
    frames: int = 16
    fps: int = 8
    cfg: float = 12.0
    note: str = ""

    @property
    def image_to_video(self) -> bool:
        return self.resampler is not None


_T2V_RELPOS = UNetConfig(use_relative_position=True)
_VC2_LIKE = UNetConfig(temporal_conv=True, fps_cond=True)

VARIANTS: dict[str, Variant] = {
    "t2v-1024-v1.0": Variant(
        "t2v-1024-v1.0",
        _T2V_RELPOS.replace(fps_cond=True),
        ScheduleConfig(use_scale=True, fix_scale_bug=True),  # scale_b: the reference default 0.3
        height=576,
        width=1024,
        fps=28,
        note="VideoCrafter1 text-to-video 576x1024 (configs/inference_t2v_1024_v1.0.yaml)",
    ),
    "t2v-512-v1.0": Variant(
        "t2v-512-v1.0",
        _T2V_RELPOS,
        ScheduleConfig(),
        note="VideoCrafter1 text-to-video 320x512, the December 2023 weights (inference_t2v_512_v1.0.yaml)",
    ),
    "i2v-512-v1.0": Variant(
        "i2v-512-v1.0",
        _VC2_LIKE.replace(use_image_attention=True),
        ScheduleConfig(use_scale=True, scale_b=0.7),
        resampler=ResamplerConfig(),
        note="VideoCrafter1 image-to-video 320x512 (inference_i2v_512_v1.0.yaml)",
    ),
    "t2v-512-v2.0": Variant(
        "t2v-512-v2.0",
        _VC2_LIKE,
        ScheduleConfig(use_scale=True, scale_b=0.7),
        fps=8,
        note=(
            "VideoCrafter2 text-to-video 320x512 (inference_t2v_512_v2.0.yaml); the October 2023 "
            "VideoCrafter1 512 weights had this same configuration"
        ),
    ),
}


def _has(keys: set[str], fragment: str) -> bool:
    return any(fragment in k for k in keys)


def detect_variant(keys) -> Variant:
    """The variant whose architecture matches a U-Net state dict's keys (prefix stripped or not).

    The switches are read from the weights: ``fps_embedding`` (fps_cond), ``temopral_conv``
    (temporal_conv, the reference's spelling), ``relative_position_k`` (relative temporal
    attention), ``to_k_ip`` (image cross-attention). The schedule follows the architecture: the
    December 2023 VideoCrafter1 512 model (relative positions, no fps) has no ``use_scale``; the
    October 2023 one had VideoCrafter2's configuration and is detected as ``t2v-512-v2.0``.
    """
    keys = set(keys)
    fps = _has(keys, "fps_embedding.")
    tconv = _has(keys, ".temopral_conv.")
    relpos = _has(keys, "relative_position_k.")
    image = _has(keys, ".to_k_ip.")
    if not _has(keys, "input_blocks.0.0.weight") or not _has(keys, "time_embed.0.weight"):
        raise ValueError("not a VideoCrafter U-Net: no input_blocks.0.0 / time_embed weights")
    if not _has(keys, "init_attn.") or not _has(keys, ".transformer_blocks.0.attn1.to_q."):
        raise ValueError("not a VideoCrafter U-Net: no init_attn temporal transformer")
    if image:
        if not (fps and tconv and not relpos):
            raise ValueError("image cross-attention weights with an unknown set of switches")
        return VARIANTS["i2v-512-v1.0"]
    if relpos and fps and not tconv:
        return VARIANTS["t2v-1024-v1.0"]
    if relpos and not fps and not tconv:
        return VARIANTS["t2v-512-v1.0"]
    if tconv and fps and not relpos:
        return VARIANTS["t2v-512-v2.0"]
    raise ValueError(
        f"unknown VideoCrafter switch combination: fps_cond={fps}, temporal_conv={tconv}, relative_position={relpos}"
    )


def unet_config_from_weights(shapes: Mapping[str, tuple[int, ...]], base: UNetConfig) -> UNetConfig:
    """``base`` (the variant's switches) with every size read from the weight shapes.

    Widths (``model_channels``, ``channel_mult``, in/out channels, ``context_dim``), the level
    layout (``num_res_blocks``, ``attention_resolutions``), ``num_head_channels`` (``init_attn``
    has 8 heads of it) and, with relative positions, ``temporal_length`` (tables of ``2 L + 1``).
    """
    model_channels, in_channels = shapes["input_blocks.0.0.weight"][:2]
    blocks = sorted({int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks.")})
    downsamples = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in shapes]
    levels = len(downsamples) + 1
    num_res_blocks = (len(blocks) - 1 - len(downsamples)) // levels
    mult, attention = [], []
    for level in range(levels):
        first = 1 + level * (num_res_blocks + 1)
        mult.append(shapes[f"input_blocks.{first}.0.in_layers.2.weight"][0] // model_channels)
        if f"input_blocks.{first}.1.proj_in.weight" in shapes:
            attention.append(2**level)
    changes: dict[str, Any] = dict(
        in_channels=in_channels,
        out_channels=shapes["out.2.weight"][0],
        model_channels=model_channels,
        channel_mult=tuple(mult),
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(sorted(attention, reverse=True)),
        context_dim=shapes["middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1],  # the spatial one
    )
    init_proj = shapes.get("init_attn.0.proj_in.weight")
    if init_proj is not None:
        changes["num_head_channels"] = init_proj[0] // base.init_attn_heads
    table = next((v for k, v in shapes.items() if k.endswith("relative_position_k.embeddings_table")), None)
    if table is not None:
        changes["temporal_length"] = (table[0] - 1) // 2
    return base.replace(**changes)
