"""Configurations kept as data.

Field names are the keys of the upstream diffusers ``config.json`` files, so a config
loads with ``Config.from_dict(json.load(...))`` and unknown keys are ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .preview import RELEASED_VAE_RGB


def _fits(annotation: str, value: Any) -> bool:
    """Whether a JSON value fits a field annotated ``annotation`` (a string: postponed annotations)."""
    if value is None:
        return "None" in annotation
    if isinstance(value, bool):
        return annotation.startswith("bool")
    if isinstance(value, int):
        return annotation.startswith(("int", "float"))
    if isinstance(value, float):
        return annotation.startswith("float") or (annotation.startswith("int") and value.is_integer())
    if isinstance(value, str):
        return annotation.startswith("str")
    if isinstance(value, (list, tuple)):
        inner = annotation.partition("[")[2].partition(",")[0]
        return annotation.startswith("tuple") and all(_fits(inner, v) for v in value)
    return annotation.startswith("dict") and isinstance(value, dict)


class _FromDict:
    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The config from a ``config.json``-style dict; a ``TypeError`` names a value of the wrong type."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object of {cls.__name__} values, got {type(data).__name__}")
        fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        wrong = [
            f"{k}={v!r} (expected {fields[k]})" for k, v in data.items() if k in fields and not _fits(fields[k], v)
        ]
        if wrong:
            raise TypeError(f"{cls.__name__} values of the wrong type: {', '.join(wrong[:5])}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields}
        for k, v in kwargs.items():
            if fields[k].startswith("int") and isinstance(v, float):
                kwargs[k] = int(v)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TransformerConfig(_FromDict):
    """CogVideoXTransformer3DModel hyper-parameters (defaults: CogVideoX-2B)."""

    num_attention_heads: int = 30
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: int | None = 16
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    time_embed_dim: int = 512
    ofs_embed_dim: int | None = None
    text_embed_dim: int = 4096
    num_layers: int = 30
    dropout: float = 0.0
    attention_bias: bool = True
    sample_width: int = 90
    sample_height: int = 60
    sample_frames: int = 49
    patch_size: int = 2
    patch_size_t: int | None = None
    temporal_compression_ratio: int = 4
    max_text_seq_length: int = 226
    activation_fn: str = "gelu-approximate"
    timestep_activation_fn: str = "silu"
    norm_elementwise_affine: bool = True
    norm_eps: float = 1e-5
    spatial_interpolation_scale: float = 1.875
    temporal_interpolation_scale: float = 1.0
    use_rotary_positional_embeddings: bool = False
    use_learned_positional_embeddings: bool = False
    patch_bias: bool = True

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class VAEConfig(_FromDict):
    """AutoencoderKLCogVideoX hyper-parameters (defaults: the released VAE)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("CogVideoXDownBlock3D",) * 4
    up_block_types: tuple[str, ...] = ("CogVideoXUpBlock3D",) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    latent_channels: int = 16
    layers_per_block: int = 3
    act_fn: str = "silu"
    norm_eps: float = 1e-6
    norm_num_groups: int = 32
    temporal_compression_ratio: float = 4
    sample_height: int = 480
    sample_width: int = 720
    scaling_factor: float = 1.15258426
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = False
    use_post_quant_conv: bool = False
    invert_scale_latents: bool = False


@dataclass(frozen=True)
class SchedulerConfig(_FromDict):
    """CogVideoXDDIMScheduler / CogVideoXDPMScheduler hyper-parameters."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "v_prediction"
    timestep_spacing: str = "trailing"
    rescale_betas_zero_snr: bool = True
    snr_shift_scale: float = 3.0


@dataclass(frozen=True)
class Variant:
    """A released member of the family: its transformer and everything that follows it.

    The latent scaling belongs to the variant, not to the VAE file: the VAE weights are
    shared across variants.
    """

    name: str
    transformer: TransformerConfig
    scaling_factor: float
    invert_scale_latents: bool = False
    scheduler: str = "dpm"  # the reference solver: "ddim" (2B) or "dpm" (5B, 1.5)
    snr_shift_scale: float = 1.0
    fps: int = 8
    frames: int = 49
    width: int = 720
    height: int = 480
    ofs: float | None = None  # 1.5 I2V feeds ofs=2.0
    extra: dict[str, Any] = field(default_factory=dict)
    fun: str | None = None  # CogVideoX-Fun conditioning: "inpaint" (33 channels) or "control" (32)
    # Latent previews: a [C+1][3] projection of RAW VAE latents to RGB in [-1, 1], bias last
    # (cogvideox.preview.fit_rgb_projection's layout), or None when none is known for the VAE.
    latent_rgb: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False, compare=False)

    @property
    def is_i2v(self) -> bool:
        return self.transformer.in_channels > 16 and self.fun is None

    @property
    def is_fun_inpaint(self) -> bool:
        return self.fun == FUN_INPAINT

    @property
    def is_fun_control(self) -> bool:
        return self.fun == FUN_CONTROL

    @property
    def condition_channels(self) -> int:
        """Channels concatenated after the noisy latent (image, mask + masked video, control)."""
        return self.transformer.in_channels - (self.transformer.out_channels or 16)

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(snr_shift_scale=self.snr_shift_scale)


FUN_INPAINT = "inpaint"
FUN_CONTROL = "control"

_5B = dict(num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True)

VARIANTS: dict[str, Variant] = {
    "2b": Variant("2b", TransformerConfig(), scaling_factor=1.15258426, scheduler="ddim", snr_shift_scale=3.0),
    "5b": Variant("5b", TransformerConfig(**_5B), scaling_factor=0.7),
    "5b-i2v": Variant(
        "5b-i2v",
        TransformerConfig(**_5B, in_channels=32, use_learned_positional_embeddings=True),
        scaling_factor=0.7,
    ),
    "1.5-5b": Variant(
        "1.5-5b",
        TransformerConfig(
            **_5B, patch_size_t=2, patch_bias=False, sample_height=96, sample_width=170, sample_frames=81
        ),
        scaling_factor=0.7,
        invert_scale_latents=True,
        fps=16,
        frames=81,
        width=1360,
        height=768,
    ),
    "1.5-5b-i2v": Variant(
        "1.5-5b-i2v",
        TransformerConfig(
            **_5B,
            in_channels=32,
            ofs_embed_dim=512,
            patch_size_t=2,
            patch_bias=False,
            sample_height=300,
            sample_width=300,
            sample_frames=81,
        ),
        scaling_factor=0.7,
        invert_scale_latents=True,
        fps=16,
        frames=81,
        width=1360,
        height=768,
        ofs=2.0,
    ),
}

# Every released variant decodes with the same VAE, so they share its latent preview.
VARIANTS = {name: dataclasses.replace(v, latent_rgb=RELEASED_VAE_RGB) for name, v in VARIANTS.items()}


def _fun(base: str, fun: str, in_channels: int, **changes) -> Variant:
    """A CogVideoX-Fun variant (alibaba-pai / aigc-apps VideoX-Fun): the ``base`` architecture
    with a wider input (InP: noisy 16 + mask 1 + masked-video latent 16; Control: noisy 16 +
    control 16). Their example scripts sample with DDIM at 8 fps and multiply every latent by
    the VAE's scaling_factor (also on 1.5: no inverted image-latent scale). See docs/cogvideox_fun.md."""
    kind = "inp" if fun == FUN_INPAINT else "control"
    base_variant = VARIANTS[base]
    return dataclasses.replace(
        base_variant,
        name=f"fun-{base}-{kind}",
        transformer=base_variant.transformer.replace(in_channels=in_channels),
        scheduler="ddim",
        invert_scale_latents=False,
        fps=8,
        fun=fun,
        **{"width": 672, "height": 384, **changes},
    )


VARIANTS.update(
    {
        v.name: v
        for v in (
            _fun("2b", FUN_INPAINT, 33),
            _fun("5b", FUN_INPAINT, 33),
            _fun("2b", FUN_CONTROL, 32),
            _fun("5b", FUN_CONTROL, 32),
            _fun("1.5-5b", FUN_INPAINT, 33, frames=85, width=1024, height=576),
        )
    }
)
