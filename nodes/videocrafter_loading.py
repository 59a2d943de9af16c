"""Reading a converted VideoCrafter checkpoint into core types: MODEL, CLIP, VAE, CLIP_VISION.

The checkpoint is the reference's ``state_dict`` saved as safetensors
(``tools/convert_videocrafter.py``): ``model.diffusion_model.*`` (the U-Net),
``first_stage_model.*`` (SD's VAE), ``cond_stage_model.model.*`` (OpenCLIP ViT-H text tower,
SD2's text encoder), and for I2V ``embedder.model.visual.*`` (OpenCLIP ViT-H image tower) and
``image_proj_model.*`` (the resampler).
"""

from __future__ import annotations

import json

import comfy.clip_vision
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch

from ..videocrafter.configs import ResamplerConfig, detect_variant, unet_config_from_weights
from ..videocrafter.resampler import Resampler
from .common import CogVideoXNodeError
from .videocrafter_model import VideoCrafterBaseModel, VideoCrafterModelConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
VISION_PREFIX = "embedder.model.visual."
RESAMPLER_PREFIX = "image_proj_model."
RESAMPLER_METADATA = "videocrafter.resampler"  # optional JSON ResamplerConfig in the safetensors header


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _what_else(sd: dict) -> str:
    """A guess at what a non-VideoCrafter file is, for the error message."""
    keys = list(sd)
    if any(k.startswith(UNET_PREFIX + "label_emb.") for k in keys):
        return "an SDXL checkpoint"
    if any(k.startswith(UNET_PREFIX + "input_blocks.") for k in keys):
        return "a Stable Diffusion (SD1.x/SD2.x) image checkpoint"
    if any("transformer_blocks.0.norm1.linear" in k for k in keys):
        return "a CogVideoX transformer"
    return "not a VideoCrafter checkpoint"


def check_videocrafter(node: str, sd: dict) -> None:
    unet_keys = [k[len(UNET_PREFIX) :] for k in sd if k.startswith(UNET_PREFIX)]
    try:
        detect_variant(unet_keys)
    except ValueError as e:
        raise CogVideoXNodeError(
            node,
            f"this file is {_what_else(sd)} ({e}). Load SD/SDXL files with core Load Checkpoint and CogVideoX "
            "transformers with CogVideoX Model Loader; this node reads VideoCrafter1/2 checkpoints converted "
            "with tools/convert_videocrafter.py.",
        ) from e


def resampler_config(sd: dict) -> ResamplerConfig:
    """The resampler's sizes from its weights (heads of 64 channels, as the reference)."""
    _, queries, dim = sd["latents"].shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    inner = sd["layers.0.0.to_q.weight"].shape[0]
    dim_head = min(64, inner)
    return ResamplerConfig(
        dim=dim,
        depth=depth,
        dim_head=dim_head,
        heads=inner // dim_head,
        num_queries=queries,
        embedding_dim=sd["proj_in.weight"].shape[1],
        output_dim=sd["proj_out.weight"].shape[0],
        ff_mult=sd["layers.0.1.1.weight"].shape[0] // dim,
    )


def resampler_from_metadata(metadata: dict | None) -> ResamplerConfig | None:
    """A resampler config written in the file's metadata (small models with heads other than 64 wide)."""
    text = (metadata or {}).get(RESAMPLER_METADATA)
    return ResamplerConfig.from_dict(json.loads(text)) if text else None


def load_model(
    node: str, sd: dict, dtype: torch.dtype | None = None, resampler: ResamplerConfig | None = None
) -> comfy.model_patcher.ModelPatcher:
    """The U-Net (and the I2V resampler) as a core MODEL; ``resampler`` overrides the shape-read config."""
    check_videocrafter(node, sd)
    unet_sd = _strip(sd, UNET_PREFIX)
    variant = detect_variant(unet_sd)
    unet_config = unet_config_from_weights({k: tuple(v.shape) for k, v in unet_sd.items()}, variant.unet)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    supported = VideoCrafterModelConfig.supported_inference_dtypes
    if dtype is None:
        dtype = mm.unet_dtype(model_params=sum(v.numel() for v in unet_sd.values()), supported_dtypes=supported)
    config = VideoCrafterModelConfig(variant, unet_config, dtype)
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, supported))
    model = VideoCrafterBaseModel(config, device=offload_device)
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing or unexpected:
        raise CogVideoXNodeError(
            node,
            f"the U-Net weights do not fit {variant.name}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Convert the released model.ckpt again with "
            "tools/convert_videocrafter.py.",
        )
    resampler_sd = _strip(sd, RESAMPLER_PREFIX)
    if variant.image_to_video:
        if not resampler_sd:
            raise CogVideoXNodeError(node, "an image-to-video U-Net without image_proj_model.* weights: re-convert it")
        module = Resampler(resampler or resampler_config(resampler_sd))
        module.load_state_dict(resampler_sd)
        model.image_proj_model = module.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def load_vae(sd: dict) -> comfy.sd.VAE | None:
    vae_sd = _strip(sd, VAE_PREFIX)
    return comfy.sd.VAE(sd=vae_sd) if vae_sd else None


def load_clip(sd: dict, embedding_directory=None) -> comfy.sd.CLIP | None:
    """SD2's OpenCLIP ViT-H text encoder (penultimate layer) from ``cond_stage_model.model.*``."""
    if not any(k.startswith(TEXT_PREFIX) for k in sd):
        return None
    config = comfy.supported_models.SD20({"in_channels": 4})
    clip_sd = config.process_clip_state_dict(dict(sd))
    clip = comfy.sd.CLIP(
        config.clip_target(),
        embedding_directory=embedding_directory,
        tokenizer_data=clip_sd,
        parameters=comfy.utils.calculate_parameters(clip_sd),
    )
    clip.load_sd(clip_sd, full_model=True)
    return clip


def load_clip_vision(sd: dict):
    """OpenCLIP ViT-H image tower from ``embedder.model.visual.*`` as a core CLIP_VISION."""
    if not any(k.startswith(VISION_PREFIX) for k in sd):
        return None
    vision_sd = {k: v for k, v in sd.items() if k.startswith(VISION_PREFIX)}
    return comfy.clip_vision.load_clipvision_from_sd(vision_sd, prefix=VISION_PREFIX, convert_keys=True)
