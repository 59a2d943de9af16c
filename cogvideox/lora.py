"""CogVideoX LoRA files: read one, tell its format from the keys, map it onto the transformer.

Formats that circulate (all name the diffusers modules, which are the library's):

- diffusers / PEFT: ``transformer.transformer_blocks.N.attn1.to_q.lora_A.weight`` (down) and
  ``.lora_B.weight`` (up), also without ``transformer.`` and with PEFT's ``.default``. No alpha
  in the tensors; diffusers >= 0.35 writes the LoraConfig into the header as JSON under
  ``lora_adapter_metadata`` (``r``, ``lora_alpha``, ``rank_pattern``, ``alpha_pattern``,
  ``use_rslora``; with a ``transformer.`` prefix when written by the pipeline). Without it
  diffusers uses scale 1 (``utils/peft_utils.py: get_peft_kwargs``).
- SAT exports (CogVideo ``tools/export_sat_lora_weight.py``, DimensionX): the same keys, no
  alpha; SAT trained them with alpha 1, so the right scale is ``1/rank`` (``one_over_rank``).
- kohya style as VideoX-Fun writes it: ``lora_unet__transformer_blocks_N_attn1_to_q.lora_down.weight``
  / ``.lora_up.weight`` / ``.alpha`` (the double underscore comes from its empty root module
  name), for every Linear of the transformer; scale ``alpha / rank``, 1 without alpha
  (``videox_fun/utils/lora_utils.py: merge_lora``). Also with a single underscore (ComfyUI's
  ``lora_unet_`` naming) and with dotted names under ComfyUI's ``diffusion_model.`` prefix.

A layer's merged weight is ``W + strength * scale * up @ down`` (``up`` [out, rank], ``down``
[rank, in]). ``load_lora`` returns the per-layer factors and scales; applying them (ComfyUI
weight patches, or ``merge`` here) is the caller's business.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .loading import CogVideoXLoadError, load_state_dict_file, read_metadata, refuse_pickle

log = logging.getLogger(__name__)

ALPHA_MODES = ("auto", "file", "one_over_rank")
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY

# Prefixes in front of the module path, longest first: PEFT's raw save, ComfyUI's, diffusers'.
_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.")
# Suffix -> role of the tensor for dotted (diffusers, PEFT, ComfyUI) keys.
_DOTTED_ROLES = (
    (".lora_A.default.weight", "down"),
    (".lora_B.default.weight", "up"),
    (".lora_B.default.bias", "up_bias"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_B.bias", "up_bias"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".alpha", "alpha"),
)
_KOHYA_ROLES = ((".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"))
KOHYA_PREFIX = "lora_unet_"
_EXPECTED = (
    "expected CogVideoX transformer LoRA keys such as "
    "'transformer.transformer_blocks.0.attn1.to_q.lora_A.weight' (diffusers/PEFT), "
    "'lora_unet__transformer_blocks_0_attn1_to_q.lora_down.weight' (CogVideoX-Fun / kohya) or "
    "'diffusion_model.transformer_blocks.0.attn1.to_q.lora_down.weight' (ComfyUI)"
)


class LoRAError(CogVideoXLoadError):
    """A LoRA file that does not fit the model (wrong family or variant, broken file)."""


@dataclass
class LoRALayer:
    """One adapted Linear: ``delta W = scale * up @ down`` (+ ``scale * up_bias`` on the bias)."""

    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [out, rank]
    scale: float
    up_bias: torch.Tensor | None = None  # [out], PEFT's lora_bias

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``scale * up @ down`` -> [out, in]."""
        return self.scale * (self.up.to(dtype) @ self.down.to(dtype))


@dataclass
class LoRA:
    format: str  # "diffusers", "kohya (CogVideoX-Fun)", "kohya", "comfy"
    layers: dict[str, LoRALayer]  # library module path (e.g. transformer_blocks.0.attn1.to_q) -> factors
    unmatched: list[str] = field(default_factory=list)
    alpha_source: str = ""  # where the scales came from, for the log

    def describe(self) -> str:
        ranks = sorted({layer.rank for layer in self.layers.values()})
        return (
            f"{self.format} LoRA, {len(self.layers)} layers, rank {'/'.join(map(str, ranks))}, "
            f"scale from {self.alpha_source}"
        )


def linear_targets(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{module path: (out_features, in_features)}`` for every Linear of ``model`` (the LoRA targets)."""
    return {name: (m.out_features, m.in_features) for name, m in model.named_modules() if isinstance(m, nn.Linear)}


# ----------------------------------------------------------------------------- reading
def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a ``.safetensors`` LoRA; pickles are refused unread."""
    path = Path(path)
    refuse_pickle(path)
    if path.suffix.lower() != ".safetensors":
        raise LoRAError(f"expected a .safetensors LoRA file, got {path.name}")
    metadata = read_metadata(path)
    return load_state_dict_file(path), metadata


def peft_config(metadata: Mapping[str, str]) -> dict | None:
    """The LoraConfig dict diffusers stores under ``lora_adapter_metadata`` (``transformer.`` stripped)."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LoRAError(f"the {METADATA_KEY} header is not JSON ({e})") from e
    if not isinstance(config, dict):
        return None
    if any(k.startswith("transformer.") for k in config):
        config = {k.removeprefix("transformer."): v for k, v in config.items() if k.startswith("transformer.")}
    return config


def _pattern_value(patterns: Mapping[str, float] | None, module: str):
    """PEFT's rank/alpha pattern lookup: a key matches the module path or its dotted tail."""
    for key, value in (patterns or {}).items():
        if module == key or module.endswith("." + key):
            return value
    return None


def _peft_scale(config: Mapping, module: str, rank: int) -> float:
    alpha = _pattern_value(config.get("alpha_pattern"), module)
    if alpha is None:
        alpha = config.get("lora_alpha", rank)
    r = _pattern_value(config.get("rank_pattern"), module) or config.get("r", rank)
    if r != rank:
        log.debug("LoRA metadata rank %s differs from the tensors' rank %s for %s", r, rank, module)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


# ----------------------------------------------------------------------------- keys
def _strip_prefix(key: str) -> tuple[str, str]:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :], prefix
    return key, ""


def _split_role(key: str, roles) -> tuple[str, str] | None:
    for suffix, role in roles:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def _classify(key: str, targets: Mapping[str, tuple[int, int]], kohya_names: Mapping[str, str]):
    """``(module path, role, format)`` for one file key, or None when it names nothing we have."""
    if key.startswith(KOHYA_PREFIX):
        split = _split_role(key, _KOHYA_ROLES)
        if split is None:
            return None
        name, role = split
        name = name[len(KOHYA_PREFIX) :]
        fmt = "kohya"
        if name.startswith("_"):  # VideoX-Fun: empty root module name
            name, fmt = name[1:], "kohya (CogVideoX-Fun)"
        module = kohya_names.get(name) or kohya_names.get(name.removeprefix("transformer_"))
        return None if module is None else (module, role, fmt)
    stripped, prefix = _strip_prefix(key)
    split = _split_role(stripped, _DOTTED_ROLES)
    if split is None or split[0] not in targets:
        return None
    module, role = split
    fmt = "comfy" if prefix.endswith("diffusion_model.") else "diffusers"
    if role in ("down", "up") and (".lora_down." in key or ".lora_up." in key):
        fmt = "comfy" if fmt == "comfy" else "kohya"
    return module, role, fmt


def _scale(
    module: str, rank: int, alpha: torch.Tensor | None, config: dict | None, alpha_mode: str
) -> tuple[float, str]:
    if alpha_mode == "one_over_rank":
        return 1.0 / rank, "1/rank (alpha_mode one_over_rank)"
    if alpha is not None:
        return float(alpha.float().item()) / rank, "the file's alpha tensors (alpha/rank)"
    if config is not None:
        return _peft_scale(config, module, rank), f"the file's {METADATA_KEY} (lora_alpha/r)"
    if alpha_mode == "file":
        raise LoRAError(
            "alpha_mode is 'file' but the file carries no alpha (no .alpha tensors, no "
            f"{METADATA_KEY} header). Use 'auto' (scale 1) or 'one_over_rank' (SAT-exported LoRAs)."
        )
    return 1.0, "no alpha in the file: scale 1"


def parse_lora(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    targets: Mapping[str, tuple[int, int]],
    alpha_mode: str = "auto",
) -> LoRA:
    """Map a LoRA state dict onto ``targets`` (``linear_targets(model)``); see the module docstring.

    ``alpha_mode``: ``auto`` takes the file's alpha (``.alpha`` tensors or the PEFT metadata) and
    scale 1 without one; ``file`` insists on the file's alpha; ``one_over_rank`` ignores it and
    uses ``1/rank`` (LoRAs exported from CogVideo's SAT trainer, which trains with alpha 1).
    """
    if alpha_mode not in ALPHA_MODES:
        raise LoRAError(f"unknown alpha_mode {alpha_mode!r}; one of {ALPHA_MODES}")
    kohya_names = {name.replace(".", "_"): name for name in targets}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    formats: dict[str, int] = {}
    unmatched = []
    for key, tensor in tensors.items():
        found = _classify(key, targets, kohya_names)
        if found is None:
            unmatched.append(key)
            continue
        module, role, fmt = found
        parts.setdefault(module, {})[role] = tensor
        formats[fmt] = formats.get(fmt, 0) + 1
    config = peft_config(metadata)
    layers: dict[str, LoRALayer] = {}
    sources = set()
    for module, found in parts.items():
        if "down" not in found or "up" not in found:
            unmatched.extend(f"{module} ({role} without its pair)" for role in found)
            continue
        down, up = found["down"], found["up"]
        if down.ndim != 2 or up.ndim != 2:
            down, up = down.flatten(1), up.flatten(1)  # 1x1 conv LoRA factors
        out_features, in_features = targets[module]
        if up.shape[1] != down.shape[0] or up.shape[0] != out_features or down.shape[1] != in_features:
            raise LoRAError(
                f"layer {module}: the LoRA's up {tuple(up.shape)} @ down {tuple(down.shape)} does not fit the "
                f"model's weight ({out_features}, {in_features}). The LoRA was trained for another CogVideoX "
                "variant (e.g. a 2B LoRA on a 5B model); load the model it was made for."
            )
        scale, source = _scale(module, down.shape[0], found.get("alpha"), config, alpha_mode)
        sources.add(source)
        layers[module] = LoRALayer(down, up, scale, found.get("up_bias"))
    if not layers:
        sample = ", ".join(repr(k) for k in list(tensors)[:3]) or "none"
        raise LoRAError(
            f"no key of the file matches the CogVideoX transformer ({len(tensors)} keys, e.g. {sample}); "
            f"{_EXPECTED}. Is it a LoRA for another model (SD, Flux, Hunyuan, ...)?"
        )
    fmt = max(formats, key=formats.get)
    return LoRA(fmt, layers, unmatched, "; ".join(sorted(sources)))


def load_lora(path: str | Path, targets: Mapping[str, tuple[int, int]], alpha_mode: str = "auto") -> LoRA:
    """Read a ``.safetensors`` LoRA and map it onto ``targets``; warns once about unmatched keys."""
    tensors, metadata = read_lora_file(path)
    lora = parse_lora(tensors, metadata, targets, alpha_mode)
    if lora.unmatched:
        log.warning(
            "%s: %d LoRA keys match no CogVideoX layer and are ignored, e.g. %s",
            Path(path).name,
            len(lora.unmatched),
            lora.unmatched[:5],
        )
    log.info("%s: %s", Path(path).name, lora.describe())
    return lora


# ----------------------------------------------------------------------------- at compute time
class WeightDelta:
    """A LoRA added at compute time: a callable for a casting layer's ``weight_function`` (see
    ``ops``; ComfyUI's ``ModelPatcher.add_weight_wrapper`` puts it there while the patched model
    is loaded and takes it off when another one loads).

    ``fn(weight) -> weight + factor * up @ down`` in one ``addmm`` in the weight's dtype on its
    device (one rounding); ``divisor`` (a low-precision layer's fp8 scale, see
    ``quant.LowPrecisionLinear.stored_domain``) divides the factor. The weight in storage is never
    touched, so the LoRA's difference is never rounded to an fp8 / bf16 storage dtype.
    """

    def __init__(self, layer: LoRALayer, factor: float, divisor: torch.Tensor | None = None):
        self.up, self.down = layer.up.float(), layer.down.float()  # [out, rank], [rank, in]
        self.alpha = float(factor) / (1.0 if divisor is None else float(divisor))

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        up = self.up.to(weight.device, weight.dtype)
        down = self.down.to(weight.device, weight.dtype)
        return torch.addmm(weight, up, down, alpha=self.alpha)  # [out, in]


# ----------------------------------------------------------------------------- merging
@torch.no_grad()
def merge(model: nn.Module, lora: LoRA, strength: float = 1.0) -> nn.Module:
    """Add ``strength * scale * up @ down`` to the weights of ``model`` in place (tests, tools).

    The nodes never do this: they hand the same factors to ComfyUI as weight patches.
    """
    modules = dict(model.named_modules())
    for name, layer in lora.layers.items():
        weight = modules[name].weight
        weight.add_((strength * layer.delta()).to(weight.dtype))
        if layer.up_bias is not None and modules[name].bias is not None:
            modules[name].bias.add_((strength * layer.scale * layer.up_bias.float()).to(weight.dtype))
    return model


def to_kohya(tensors: Mapping[str, torch.Tensor], alpha: Mapping[str, float] | None = None, fun: bool = True):
    """A diffusers/PEFT LoRA state dict in VideoX-Fun's kohya names (``lora_unet__...``).

    ``alpha``: ``{module path: alpha}`` to store as ``.alpha`` tensors (none: the scale stays 1).
    """
    root = KOHYA_PREFIX + ("_" if fun else "")
    out = {}
    for key, tensor in tensors.items():
        stripped, _ = _strip_prefix(key)
        module, role = _split_role(stripped, _DOTTED_ROLES)
        name = root + module.replace(".", "_")
        out[f"{name}.lora_{role}.weight"] = tensor
        if alpha and module in alpha and role == "down":
            out[f"{name}.alpha"] = torch.tensor(float(alpha[module]))
    return out
