"""What every node shares: the category root, our own types, model folders, errors."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import folder_paths
from comfy_api.latest import io

CATEGORY = "CogVideoX"
log = logging.getLogger(__name__)

# Our own types, only where core ComfyUI has none: core MODEL/VAE are comfy BaseModel /
# comfy.sd.VAE objects that our networks are not, so wiring ours into core samplers
# would break at run time. Everything else is core: LATENT, CONDITIONING, CLIP, IMAGE.
MODEL_TYPE = "COGVIDEOX_MODEL"
VAE_TYPE = "COGVIDEOX_VAE"
# ... as V3 schema types (``io.Custom``), for ``io.Schema`` inputs and outputs.
ModelType = io.Custom(MODEL_TYPE)
VAEType = io.Custom(VAE_TYPE)

# Folders a user may keep diffusers-format models in, besides core's models/diffusers.
COGVIDEO_FOLDER = "CogVideo"
if COGVIDEO_FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(COGVIDEO_FOLDER, os.path.join(folder_paths.models_dir, COGVIDEO_FOLDER))
DIFFUSERS_ROOTS = ("diffusers", COGVIDEO_FOLDER)

# The tiny model shipped in the repo (tiny/<folder>/) shows up in the loaders' lists, so the
# shipped workflows run right after installing the pack, with no download.
TINY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tiny")
for _folder in ("diffusion_models", "vae", "text_encoders", "loras", "checkpoints"):
    if os.path.isdir(os.path.join(TINY_DIR, _folder)):
        folder_paths.add_model_folder_path(_folder, os.path.join(TINY_DIR, _folder), is_default=False)


def weight_key_prefix(patcher) -> str:
    """What ModelPatcher weight keys put before the library's parameter names."""
    return "diffusion_model." if hasattr(patcher.model, "diffusion_model") else ""


class CogVideoXNodeError(ValueError):
    """An error that names the node, what was wrong and the fix."""

    def __init__(self, node: str, message: str):
        super().__init__(f"{node}: {message}")


def network(patcher) -> Any:
    """The library network a ModelPatcher holds: ``patcher.model.diffusion_model`` for the core
    MODEL (nodes/core_model.py), the patched module itself otherwise (the VAE)."""
    return getattr(patcher.model, "diffusion_model", patcher.model)


@dataclass
class CogVideoXModel:
    """COGVIDEOX_MODEL: the transformer in ComfyUI's memory manager, and its variant."""

    # comfy.model_patcher.ModelPatcher around nodes.core_model.CogVideoXCoreModel, whose
    # diffusion_model is cogvideox.transformer.CogVideoXTransformer; the same patcher is the
    # loader's core MODEL output.
    patcher: Any
    variant: Any  # cogvideox.configs.Variant
    source: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CogVideoXVAE:
    """COGVIDEOX_VAE: the 3D causal VAE in ComfyUI's memory manager."""

    patcher: Any  # ModelPatcher around cogvideox.vae.CogVideoXVAE
    source: str = ""
    rgb_projection: Any = None  # [C+1, 3] latent -> RGB projection for previews, if known


def diffusers_folders(component: str) -> list[str]:
    """``<root>/<name>`` for every diffusers-format model folder that has ``component``.

    A folder qualifies when it holds ``<component>/config.json`` (a whole pipeline) or is
    itself the component (``config.json`` plus weights).
    """
    found = []
    for root in DIFFUSERS_ROOTS:
        for base in folder_paths.get_folder_paths(root):
            if not os.path.isdir(base):
                continue
            for name in sorted(os.listdir(base)):
                path = os.path.join(base, name)
                if os.path.isfile(os.path.join(path, component, "config.json")):
                    found.append(f"{root}/{name}/{component}")
                elif os.path.isfile(os.path.join(path, "config.json")) and name.endswith(component):
                    found.append(f"{root}/{name}")
                elif os.path.isdir(os.path.join(path, component)):
                    _explain_unlisted(os.path.join(path, component))
    return found


_EXPLAINED: set[str] = set()


def _explain_unlisted(folder: str) -> None:
    """Say once in the log why a diffusers component folder is not offered in the loaders."""
    if folder in _EXPLAINED:
        return
    _EXPLAINED.add(folder)
    log.warning(
        "CogVideoX: %s is not listed in the loaders: it has no config.json. Copy config.json from the model's "
        "download into it (a diffusers component folder holds config.json and its .safetensors weights).",
        folder,
    )


def model_choices(folder: str, component: str) -> list[str]:
    """Single files from a core model folder, then diffusers-format folders."""
    files = [f for f in folder_paths.get_filename_list(folder) if not f.startswith(".")]
    return files + diffusers_folders(component)


def resolve_model_path(node: str, folder: str, name: str) -> str:
    """The absolute path for a choice of ``model_choices``; a clear error if it is gone."""
    root, _, rest = name.partition("/")
    if root in DIFFUSERS_ROOTS and rest:
        for base in folder_paths.get_folder_paths(root):
            path = os.path.join(base, rest)
            if os.path.isdir(path):
                return path
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise CogVideoXNodeError(
            node,
            f"model file {name!r} was not found in models/{folder}/ (or a diffusers folder under "
            f"models/diffusers/ or models/{COGVIDEO_FOLDER}/). Put the file there and refresh the page.",
        )
    return path


DTYPES = {"auto": None, "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_dtype(name: str, device) -> Any:
    """The compute dtype for a weight dtype choice; ``auto`` follows the device."""
    import comfy.model_management as mm
    import torch

    if DTYPES.get(name):
        return getattr(torch, DTYPES[name])
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float16


# ------------------------------------------------------------------ typed and linked inputs
# ComfyUI checks a typed widget value against its min/max before the run, but a value that
# comes through a link (a Primitive or math node) reaches validate_inputs as None and skips the
# widget limits. So every node checks its widget values twice with the same words: in
# validate_inputs (typed values: the prompt is refused) and at the start of execute (every
# value: linked ones are refused there). The answer for a value is the same either way.
# ComfyUI 0.3.75 does not check a V3 combo's value against its options (it does for V1 lists),
# so the nodes list their combos in validate_inputs too and the choice is checked here.


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def _choices(kind, options: dict) -> list | None:
    """The allowed values of a combo input (V1: a list as the type; V3: ``COMBO`` with options)."""
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(options.get("options", []))
    return None


def _choice_problem(name: str, value, choices: list) -> str:
    shown = choices if len(choices) <= 20 else f"the {len(choices)} files listed"
    return f"{name}={_shown(value)} is not one of {shown}"


def widget_problems(node_cls, values: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with ``values`` against the widgets ``node_cls.INPUT_TYPES()`` declares:
    numbers outside min..max (or not finite), choices not in the list. ``None`` (a linked value
    during validation) and the names in ``skip`` (checked by the node itself) are left out."""
    import math

    types = node_cls.INPUT_TYPES()
    spec = {**types.get("required", {}), **types.get("optional", {})}
    problems = []
    for name, value in values.items():
        if value is None or name in skip or name not in spec:
            continue
        kind = spec[name][0]
        options = spec[name][1] if len(spec[name]) > 1 else {}
        choices = _choices(kind, options)
        if choices is not None:
            if value not in choices:
                problems.append(_choice_problem(name, value, choices))
        elif kind in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{name}={_shown(value)} is not a number")
            elif not math.isfinite(value):
                problems.append(f"{name}={value} is not a finite number")
            elif kind == "INT" and value != int(value):
                problems.append(f"{name}={_shown(value)} is not a whole number")
            elif ("min" in options and value < options["min"]) or ("max" in options and value > options["max"]):
                lo, hi = options.get("min"), options.get("max")
                problems.append(f"{name}={_shown(value)} is out of range; use {_shown(lo)} to {_shown(hi)}")
    return problems


class CheckedInputs(io.ComfyNode):
    """The base of every node of the pack: a V3 node (``io.ComfyNode``) with one check of the
    widget values for typed and linked values alike.

    A node lists its checked inputs in its ``validate_inputs`` signature and returns
    ``cls.validation_answer(...)`` there, and calls ``cls.check_inputs(...)`` first in
    ``execute``. It may override ``input_problems`` to add its own rules (and list the inputs
    those rules cover in ``CUSTOM_CHECKED`` so the generic range message is not given twice).
    ``DISPLAY_NAME`` is the schema's display name and the name every error starts with.
    """

    DISPLAY_NAME = ""
    CUSTOM_CHECKED: tuple[str, ...] = ()

    @classmethod
    def input_problems(cls, values: dict[str, Any]) -> list[str]:
        return widget_problems(cls, values, skip=cls.CUSTOM_CHECKED)

    @classmethod
    def validation_answer(cls, **values) -> bool | str:
        problems = cls.input_problems({k: v for k, v in values.items() if v is not None})
        return True if not problems else f"{cls.DISPLAY_NAME}: " + "; ".join(problems)

    @classmethod
    def check_inputs(cls, **values) -> None:
        problems = cls.input_problems(values)
        if problems:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, "; ".join(problems))
