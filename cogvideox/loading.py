"""Loading CogVideoX weights from safetensors: diffusers folders, sharded folders, single files.

Only safetensors is ever read; pickle checkpoints are refused (never unpickled). Tensors go
shard by shard, tensor by tensor, straight to the requested dtype and device, and the model is
built on the meta device and filled with ``load_state_dict(..., assign=True)``, so no second
full copy of the weights is made.

Configs come from, in order: an explicit config argument, a ``config.json`` next to the
weights, the ``__metadata__["config"]`` JSON of a single file, or detection from the key names
and tensor shapes. Any mismatch raises ``CogVideoXLoadError`` saying what was expected and
what was found.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .configs import VARIANTS, TransformerConfig, VAEConfig, Variant
from .transformer import CogVideoXTransformer

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".pth", ".pt2", ".ckpt", ".bin", ".pkl", ".pickle")
# Every safetensors extension ComfyUI lists in its model folders (folder_paths.supported_pt_extensions).
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
SINGLE_FILE_NAME = "diffusion_pytorch_model.safetensors"
INDEX_SUFFIX = ".safetensors.index.json"

# Keys every diffusers CogVideoX transformer / VAE state dict has.
TRANSFORMER_REQUIRED = (
    "patch_embed.proj.weight",
    "patch_embed.text_proj.weight",
    "time_embedding.linear_1.weight",
    "transformer_blocks.0.attn1.norm_q.weight",
    "proj_out.weight",
)
VAE_REQUIRED = (
    "encoder.conv_in.conv.weight",
    "encoder.conv_out.conv.weight",
    "encoder.down_blocks.0.resnets.0.conv1.conv.weight",
    "decoder.conv_in.conv.weight",
    "decoder.conv_out.conv.weight",
)


class CogVideoXLoadError(ValueError):
    """A file or state dict that is not what the loader expects (wrong model, truncated, pickle)."""


# --------------------------------------------------------------------------- files
def refuse_pickle(path: str | Path) -> None:
    """Raise if ``path`` is a pickle checkpoint (by its suffix); it is never opened."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CogVideoXLoadError(
            f"refusing to load {path}: '{path.suffix}' files are Python pickles, which can run arbitrary "
            "code when loaded. Only .safetensors is supported; convert it once in a trusted environment, "
            "e.g. `safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')`, "
            "or download the .safetensors release of the model."
        )


def weight_files(path: str | Path, subfolder: str | None = None) -> tuple[list[Path], Path | None]:
    """The safetensors files of a checkpoint and its ``config.json`` (or None).

    ``path`` is a ``.safetensors`` file or a folder holding either a ``*.safetensors.index.json``
    with its shards, or a single ``.safetensors`` file. A diffusers pipeline root (with
    ``model_index.json``) is entered through ``subfolder`` ("transformer" or "vae").
    """
    path = Path(path)
    if not path.exists():
        raise CogVideoXLoadError(f"no such file or folder: {path}")
    if path.is_file():
        refuse_pickle(path)
        if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
            raise CogVideoXLoadError(f"expected a .safetensors (or .sft) file, got {path.name}")
        return [path], None
    if subfolder and (path / subfolder).is_dir() and not (path / "config.json").exists():
        path = path / subfolder
    config = path / "config.json"
    config = config if config.exists() else None
    indexes = sorted(path.glob(f"*{INDEX_SUFFIX}"))
    if indexes:
        index = _read_json(indexes[0], "the shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CogVideoXLoadError(
                f"{indexes[0]} has no weight_map object; the download is incomplete: download the index again"
            )
        shards = sorted(set(map(str, weight_map.values())))
        if not shards:
            raise CogVideoXLoadError(f"{indexes[0]} has an empty weight_map")
        missing = [s for s in shards if not (path / s).exists()]
        if missing:
            raise CogVideoXLoadError(
                f"{indexes[0].name} lists shards that are missing from {path}: {missing}; the download is incomplete"
            )
        return [path / s for s in shards], config
    if (path / SINGLE_FILE_NAME).exists():
        return [path / SINGLE_FILE_NAME], config
    singles = sorted(p for p in path.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES)
    if len(singles) == 1:
        return singles, config
    pickles = sorted(p for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        refuse_pickle(pickles[0])
    found = sorted(p.name for p in path.iterdir())[:10]
    raise CogVideoXLoadError(f"expected {SINGLE_FILE_NAME} or a *{INDEX_SUFFIX} with shards in {path}, found {found}")


def _read_json(file: Path, what: str):
    """A JSON file; a clear error when it is empty, cut short or not JSON."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CogVideoXLoadError(f"cannot read {what} {file} ({err})") from err
    if not text.strip():
        raise CogVideoXLoadError(f"{what} {file} is empty; download it again")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CogVideoXLoadError(
            f"{what} {file} is not valid JSON ({err.msg} at line {err.lineno}); the file is cut short or was "
            "edited by hand: download it again"
        ) from err


def config_from_dict(cls, data, source) -> object:
    """``cls.from_dict(data)`` with a clear error for values of the wrong type."""
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CogVideoXLoadError(f"the config of {source} does not fit ({err}); fix or download it again") from err


def _open(file: Path, device: str):
    try:
        return safe_open(str(file), framework="pt", device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CogVideoXLoadError(
            f"cannot read {file} as safetensors ({err}); the file is truncated or not a safetensors "
            "file: download it again"
        ) from err


def read_metadata(file: str | Path) -> dict[str, str]:
    with _open(Path(file), "cpu") as sf:
        return dict(sf.metadata() or {})


def read_shapes(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes by name, read from the headers only."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with _open(file, "cpu") as sf:
            for key in sf.keys():
                shapes[key] = tuple(sf.get_slice(key).get_shape())
    return shapes


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def stored_dtypes(path: str | Path, subfolder: str | None = None) -> set[torch.dtype]:
    """The floating-point dtypes the weights are stored in, read from the headers only."""
    files, _ = weight_files(path, subfolder)
    found: set[torch.dtype] = set()
    for file in files:
        with _open(file, "cpu") as sf:
            for key in sf.keys():
                dtype = _SAFETENSORS_DTYPES.get(sf.get_slice(key).get_dtype())
                if dtype is not None:
                    found.add(dtype)
    return found


def load_state_dict_file(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file or diffusers folder (sharded or not).

    Floating-point tensors are cast to ``dtype`` when given; each tensor is converted as it
    is read, so peak memory is the state dict plus one tensor.
    """
    files, _ = weight_files(path)
    return _read_tensors(files, dtype, device)


def _read_tensors(
    files: Sequence[Path], dtype: torch.dtype | None, device, keep: Sequence[torch.dtype] = ()
) -> dict[str, torch.Tensor]:
    """Tensors of ``files``; floating-point ones cast to ``dtype`` unless stored in a ``keep`` dtype."""
    device = str(torch.device(device))
    out: dict[str, torch.Tensor] = {}
    for file in files:
        with _open(file, device) as sf:
            for key in sf.keys():
                try:
                    tensor = sf.get_tensor(key)
                except (SafetensorError, OSError, ValueError) as err:
                    raise CogVideoXLoadError(
                        f"cannot read tensor {key!r} from {file} ({err}); the file is truncated: download it again"
                    ) from err
                if dtype is not None and tensor.is_floating_point() and tensor.dtype not in (dtype, *keep):
                    tensor = tensor.to(dtype)
                out[key] = tensor
    return out


def save_safetensors(
    model: nn.Module, path: str | Path, config=None, extra: Mapping[str, object] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write ``model.state_dict()`` to one file, with ``config`` (a dataclass) as JSON metadata.

    ``extra`` entries are stored as JSON too (e.g. ``{"variant": {...}}`` for non-released models).
    ``dtype`` (e.g. ``torch.float16``, half the bytes) stores the floating-point tensors in it;
    the loaders cast them back to the compute dtype.
    """
    metadata = {k: json.dumps(v) for k, v in (extra or {}).items()}
    config = config if config is not None else getattr(model, "config", None)
    if config is not None:
        data = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        metadata["config"] = json.dumps(data)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(tensors, str(path), metadata=metadata)


def _config_json(files: Sequence[Path], config_file: Path | None) -> dict | None:
    if config_file is not None:
        return _read_json(config_file, "the config")
    if len(files) == 1:
        raw = read_metadata(files[0]).get("config")
        if raw:
            try:
                return json.loads(raw)
            except json.JSONDecodeError as err:
                raise CogVideoXLoadError(f"the config metadata of {files[0]} is not valid JSON ({err})") from err
    return None


# ------------------------------------------------------------------- detection
def _require(shapes: Mapping[str, Sequence[int]], keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in shapes]
    if missing:
        sample = ", ".join(f"{k} {list(shapes[k])}" for k in list(shapes)[:4]) or "no tensors"
        raise CogVideoXLoadError(
            f"this is not a diffusers {what} state dict: expected keys {list(keys)}, missing {missing}; "
            f"found {len(shapes)} tensors such as {sample}. {_guess_model(shapes)}"
        )


def _guess_model(shapes: Mapping[str, Sequence[int]]) -> str:
    keys = set(shapes)
    if any(k.startswith(("encoder.down.", "encoder.down_blocks.")) for k in keys) and any(
        len(shapes[k]) == 4 for k in keys if k.startswith("encoder.conv_in")
    ):
        return "It looks like a 2D image VAE (e.g. Stable Diffusion's), not the CogVideoX 3D VAE."
    if any(k.startswith(("model.diffusion_model.", "input_blocks.", "down_blocks.")) for k in keys):
        return "It looks like an image diffusion U-Net (e.g. Stable Diffusion), not a CogVideoX transformer."
    if any(k.startswith("encoder.conv_in.conv") for k in keys):
        return "It looks like the CogVideoX VAE: load it with the VAE loader."
    if "patch_embed.proj.weight" in keys:
        return "It looks like a CogVideoX transformer: load it with the transformer loader."
    if any(k.startswith(("model.", "module.", "transformer.")) for k in keys):
        return "The keys carry a prefix: only the diffusers key layout (no prefix) is supported."
    return "Use a diffusers-format CogVideoX checkpoint (.safetensors)."


def _count_indices(shapes: Mapping[str, Sequence[int]], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


FUN_INPAINT_CHANNELS = 17  # mask 1 + masked-video latent 16
FUN_CONTROL_CHANNELS = 16  # control-video latent


def _structural_variant(cfg: TransformerConfig) -> str:
    """Name of the released variant with the same structure (positions, patching, channels, ofs).

    The extra input channels tell the kind: +17 CogVideoX-Fun InP, +16 image-to-video (learned
    positions or ofs) or CogVideoX-Fun Control (neither), none text-to-video.
    """
    size = "5b" if cfg.use_rotary_positional_embeddings else "2b"
    extra = cfg.in_channels - (cfg.out_channels or 16)
    if cfg.patch_size_t is not None:
        if extra == FUN_INPAINT_CHANNELS and not cfg.ofs_embed_dim:
            return "fun-1.5-5b-inp"
        return "1.5-5b-i2v" if cfg.ofs_embed_dim or cfg.in_channels > 16 else "1.5-5b"
    if extra == FUN_INPAINT_CHANNELS:
        return f"fun-{size}-inp"
    if extra == FUN_CONTROL_CHANNELS and not cfg.use_learned_positional_embeddings and not cfg.ofs_embed_dim:
        # 32 channels: 5B-I2V has learned positions (a patch_embed.pos_embedding tensor), the Fun
        # Control models rotary (5B) or sin-cos (2B) positions and no such tensor.
        return f"fun-{size}-control"
    if cfg.use_learned_positional_embeddings or cfg.in_channels > 16:
        return "5b-i2v"
    return size


def detect_transformer_config(shapes: Mapping[str, Sequence[int]]) -> TransformerConfig:
    """A TransformerConfig from diffusers key names and tensor shapes.

    Sizes, channels, patching, ofs and learned positions are read from the shapes. What shapes
    cannot show is taken from the structurally matching released variant: the training
    sample size, and sin-cos versus rotary positions (neither has weights; the only sin-cos
    model, CogVideoX-2B, is recognised by its 1920-wide hidden size).
    """
    _require(shapes, TRANSFORMER_REQUIRED, "CogVideoX transformer")
    proj = tuple(shapes["patch_embed.proj.weight"])
    head_dim = shapes["transformer_blocks.0.attn1.norm_q.weight"][0]
    inner = proj[0]
    if inner % head_dim:
        raise CogVideoXLoadError(f"hidden size {inner} is not a multiple of the head size {head_dim}")
    out_features = shapes["proj_out.weight"][0]
    fields: dict = dict(
        num_attention_heads=inner // head_dim,
        attention_head_dim=head_dim,
        text_embed_dim=shapes["patch_embed.text_proj.weight"][1],
        time_embed_dim=shapes["time_embedding.linear_1.weight"][0],
        num_layers=_count_indices(shapes, "transformer_blocks."),
        attention_bias="transformer_blocks.0.attn1.to_q.bias" in shapes,
        norm_elementwise_affine="norm_final.weight" in shapes,
        ofs_embed_dim=shapes["ofs_embedding.linear_1.weight"][0] if "ofs_embedding.linear_1.weight" in shapes else None,
        use_learned_positional_embeddings="patch_embed.pos_embedding" in shapes,
    )
    if len(proj) == 4:  # Conv2d [D, C, p, p]: CogVideoX 1.0
        p = proj[-1]
        fields.update(
            in_channels=proj[1], patch_size=p, patch_size_t=None, patch_bias="patch_embed.proj.bias" in shapes
        )
        out_div = p * p
    elif len(proj) == 2:  # Linear [D, C * pt * p * p]: CogVideoX 1.5 (p = pt = 2 for released models)
        if proj[1] % 8:
            raise CogVideoXLoadError(
                f"patch_embed.proj.weight {list(proj)}: a 1.5 linear patch embedding expects C*2*2*2 inputs"
            )
        fields.update(in_channels=proj[1] // 8, patch_size=2, patch_size_t=2, patch_bias=False)
        out_div = 8
    else:
        raise CogVideoXLoadError(f"patch_embed.proj.weight has an unexpected shape {list(proj)}")
    if out_features % out_div:
        raise CogVideoXLoadError(f"proj_out.weight {list(shapes['proj_out.weight'])} is not a multiple of {out_div}")
    fields["out_channels"] = out_features // out_div
    learned = fields["use_learned_positional_embeddings"]
    fields["use_rotary_positional_embeddings"] = learned or fields["patch_size_t"] is not None or inner != 1920
    probe = TransformerConfig(**fields)
    base = VARIANTS[_structural_variant(probe)].transformer
    keep = ("sample_width", "sample_height", "sample_frames", "max_text_seq_length")
    cfg = probe.replace(**{k: getattr(base, k) for k in keep})
    if learned:
        want = cfg.max_text_seq_length + _trained_patches(cfg)
        got = shapes["patch_embed.pos_embedding"][1]
        if got != want:
            raise CogVideoXLoadError(
                f"patch_embed.pos_embedding holds {got} positions, the released 5B-I2V layout has {want} "
                f"({cfg.max_text_seq_length} text + {_trained_patches(cfg)} video); the training sample "
                "size of this model cannot be read from its weights: pass a TransformerConfig or use a "
                "file with a config.json / config metadata"
            )
    return cfg


def _trained_patches(cfg: TransformerConfig) -> int:
    frames = (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1
    return frames * (cfg.sample_height // cfg.patch_size) * (cfg.sample_width // cfg.patch_size)


def match_variant(cfg: TransformerConfig) -> Variant:
    """The released Variant for ``cfg``; for other sizes, a copy carrying ``cfg``."""
    for variant in VARIANTS.values():
        if variant.transformer == cfg:
            return variant
    base = VARIANTS[_structural_variant(cfg)]
    return dataclasses.replace(base, transformer=cfg, extra={**base.extra, "custom_of": base.name})


def detect_vae_config(shapes: Mapping[str, Sequence[int]]) -> VAEConfig:
    """A VAEConfig from diffusers ``AutoencoderKLCogVideoX`` key names and tensor shapes."""
    _require(shapes, VAE_REQUIRED, "CogVideoX VAE (AutoencoderKLCogVideoX)")
    blocks = _count_indices(shapes, "encoder.down_blocks.")
    block_out = tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight"][0] for i in range(blocks))
    default = VAEConfig()
    return default.replace(
        in_channels=shapes["encoder.conv_in.conv.weight"][1],
        out_channels=shapes["decoder.conv_out.conv.weight"][0],
        block_out_channels=block_out,
        down_block_types=("CogVideoXDownBlock3D",) * blocks,
        up_block_types=("CogVideoXUpBlock3D",) * blocks,
        layers_per_block=_count_indices(shapes, "encoder.down_blocks.0.resnets."),
        latent_channels=shapes["encoder.conv_out.conv.weight"][0] // 2,
        use_quant_conv="quant_conv.weight" in shapes,
        use_post_quant_conv="post_quant_conv.weight" in shapes,
    )


# ------------------------------------------------------------------ model loading
def _fill(model: nn.Module, state: dict[str, torch.Tensor], what: str, source) -> nn.Module:
    expected = model.state_dict()
    quantized = [
        f"{k} ({str(state[k].dtype).removeprefix('torch.')})"
        for k in expected
        if k in state and expected[k].is_floating_point() and not state[k].is_floating_point()
    ]
    if quantized:
        raise CogVideoXLoadError(
            f"{source} stores weights as integers or booleans, e.g. {quantized[:3]}: int8/GGUF-style quantized "
            "checkpoints are not supported. Use a bf16/fp16/fp32 .safetensors file (the loader's weight_storage "
            "option stores it in fp8 if memory is short)"
        )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: expected {list(expected[k].shape)}, found {list(state[k].shape)}"
        for k in expected
        if k in state and tuple(expected[k].shape) != tuple(state[k].shape)
    ]
    problems = [
        f"{len(items)} {label} (e.g. {items[:3]})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong))
        if items
    ]
    if problems:
        raise CogVideoXLoadError(
            f"{source} does not match the {what} built from its config ({'; '.join(problems)}); "
            "the config (config.json, metadata or the one passed in) belongs to another model size"
        )
    model.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise CogVideoXLoadError(f"{what}: tensors without values after loading: {leftovers[:5]}")
    return model.eval().requires_grad_(False)


def load_transformer(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    config: TransformerConfig | None = None,
    operations=None,
    keep_dtypes: Sequence[torch.dtype] = (),
) -> tuple[CogVideoXTransformer, Variant]:
    """Load a CogVideoX transformer (diffusers folder, sharded folder or single file).

    ``operations`` (default ``torch.nn``) supplies the layer classes (``cogvideox.ops``).
    Tensors stored in one of ``keep_dtypes`` (e.g. fp8) stay in that dtype instead of being cast
    to ``dtype``; the ``operations`` must then cast them (e.g. ``comfy.ops.manual_cast``), and
    ``dtype`` is what those layers compute in.
    """
    files, config_file = weight_files(path, subfolder="transformer")
    shapes = read_shapes(files)
    _require(shapes, TRANSFORMER_REQUIRED, "CogVideoX transformer")
    if config is None:
        data = _config_json(files, config_file)
        if data is not None:
            config = config_from_dict(TransformerConfig, data, config_file or files[0])
        else:
            config = detect_transformer_config(shapes)
            logger.info("no config found with %s; detected %s", path, config)
    state = _read_tensors(files, dtype, device, keep_dtypes)
    if config.patch_size_t is not None and "patch_embed.proj.bias" not in state:
        # 1.5 checkpoints without a patch bias: the upstream module has one; zero is equivalent.
        weight = state["patch_embed.proj.weight"]
        state["patch_embed.proj.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    with torch.device("meta"):
        model = CogVideoXTransformer(config, operations, compute_dtype=dtype if keep_dtypes else None)
    model = _fill(model, state, "CogVideoX transformer", path)
    return model, _with_variant_metadata(match_variant(config), files)


_VARIANT_FIELDS = {f.name for f in dataclasses.fields(Variant)} - {"transformer", "extra"}


def _with_variant_metadata(variant: Variant, files: Sequence[Path]) -> Variant:
    """Apply a single file's ``__metadata__["variant"]`` (name, latent scale, solver, ...).

    Models that are not released variants (our tiny model) carry what the weights cannot
    tell: the latent scaling factor their VAE was trained with, the reference solver, fps, and
    whether they are CogVideoX-Fun models (``"fun"``; absent = not Fun).
    """
    raw = read_metadata(files[0]).get("variant") if len(files) == 1 else None
    if not raw:
        return variant
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CogVideoXLoadError(f"the variant metadata of {files[0]} is not valid JSON ({err})") from err
    # Files written with variant metadata before CogVideoX-Fun existed (the pack's tiny I2V: 32
    # channels, RoPE, no learned positions) are not Fun Control models: "fun" is stated or absent.
    data.setdefault("fun", None)
    # Such a model has its own VAE: the released VAE's preview factors do not fit its latents.
    data["latent_rgb"] = _latent_rgb(data.get("latent_rgb"), files[0])
    return dataclasses.replace(variant, **{k: v for k, v in data.items() if k in _VARIANT_FIELDS})


def _latent_rgb(value, source) -> tuple[tuple[float, ...], ...] | None:
    """A variant's ``latent_rgb`` metadata (``[C+1][3]``, bias last) as tuples, or None."""
    if value is None:
        return None
    try:
        rows = tuple(tuple(float(v) for v in row) for row in value)
    except (TypeError, ValueError) as err:
        raise CogVideoXLoadError(f"the latent_rgb metadata of {source} is not a list of number rows ({err})") from err
    if len(rows) < 2 or any(len(row) != 3 for row in rows):
        raise CogVideoXLoadError(f"the latent_rgb metadata of {source} is not [channels + 1][3] (bias last)")
    return rows


def load_vae(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    config: VAEConfig | None = None,
    operations=None,
):
    """Load the CogVideoX 3D VAE (diffusers folder, sharded folder or single file).

    ``operations`` (default ``torch.nn``) supplies the layer classes (``cogvideox.ops``).
    """
    files, config_file = weight_files(path, subfolder="vae")
    shapes = read_shapes(files)
    _require(shapes, VAE_REQUIRED, "CogVideoX VAE (AutoencoderKLCogVideoX)")
    if config is None:
        data = _config_json(files, config_file)
        source = config_file or files[0]
        config = config_from_dict(VAEConfig, data, source) if data is not None else detect_vae_config(shapes)
    from .vae import CogVideoXVAE  # imported here: only VAE loading needs it

    state = _read_tensors(files, dtype, device)
    with torch.device("meta"):
        model = CogVideoXVAE(config, operations)
    return _fill(model, state, "CogVideoX VAE", path)
