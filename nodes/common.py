"""What every node shares: the category root, our own types, model folders, errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import folder_paths

CATEGORY = "CogVideoX"

# Our own types, only where core ComfyUI has none: core MODEL/VAE are comfy BaseModel /
# comfy.sd.VAE objects that our networks are not, so wiring ours into core samplers
# would break at run time. Everything else is core: LATENT, CONDITIONING, CLIP, IMAGE.
MODEL_TYPE = "COGVIDEOX_MODEL"
VAE_TYPE = "COGVIDEOX_VAE"

# Folders a user may keep diffusers-format models in, besides core's models/diffusers.
COGVIDEO_FOLDER = "CogVideo"
if COGVIDEO_FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(COGVIDEO_FOLDER, os.path.join(folder_paths.models_dir, COGVIDEO_FOLDER))
DIFFUSERS_ROOTS = ("diffusers", COGVIDEO_FOLDER)

# The tiny model shipped in the repo (tiny/<folder>/) shows up in the loaders' lists, so the
# shipped workflows run right after installing the pack, with no download.
TINY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tiny")
for _folder in ("diffusion_models", "vae", "text_encoders", "loras"):
    if os.path.isdir(os.path.join(TINY_DIR, _folder)):
        folder_paths.add_model_folder_path(_folder, os.path.join(TINY_DIR, _folder), is_default=False)


def network(patcher) -> Any:
    """The CogVideoX transformer inside a ModelPatcher (its ``diffusion_model`` once that is a core BaseModel)."""
    return getattr(patcher.model, "diffusion_model", patcher.model)


def weight_key_prefix(patcher) -> str:
    """What ModelPatcher weight keys put before the library's parameter names."""
    return "diffusion_model." if hasattr(patcher.model, "diffusion_model") else ""


class CogVideoXNodeError(ValueError):
    """An error that names the node, what was wrong and the fix."""

    def __init__(self, node: str, message: str):
        super().__init__(f"{node}: {message}")


@dataclass
class CogVideoXModel:
    """COGVIDEOX_MODEL: the transformer in ComfyUI's memory manager, and its variant."""

    patcher: Any  # comfy.model_patcher.ModelPatcher around cogvideox.transformer.CogVideoXTransformer
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
    return found


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
