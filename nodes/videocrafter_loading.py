"""Reading a converted VideoCrafter checkpoint into core types: MODEL, CLIP, VAE, CLIP_VISION.

The checkpoint is the reference's ``state_dict`` saved as safetensors
(``tools/convert_videocrafter.py``): ``model.diffusion_model.*`` (the U-Net),
``first_stage_model.*`` (SD's VAE), ``cond_stage_model.model.*`` (OpenCLIP ViT-H text tower,
SD2's text encoder), and for I2V ``embedder.model.visual.*`` (OpenCLIP ViT-H image tower) and
``image_proj_model.*`` (the resampler).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile

import comfy.clip_vision
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.sd2_clip
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
UNET_METADATA = "videocrafter.unet"  # optional JSON of UNetConfig fields the weights cannot show (num_groups)


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


def unet_overrides_from_metadata(metadata: dict | None) -> dict:
    """U-Net config fields written in the file's metadata (the tiny model's ``num_groups``)."""
    text = (metadata or {}).get(UNET_METADATA)
    overrides = json.loads(text) if text else {}
    unknown = set(overrides) - {"num_groups"}
    if unknown:
        raise ValueError(f"unknown {UNET_METADATA} fields {sorted(unknown)}")
    return overrides


def load_model(
    node: str,
    sd: dict,
    dtype: torch.dtype | None = None,
    resampler: ResamplerConfig | None = None,
    unet_overrides: dict | None = None,
) -> comfy.model_patcher.ModelPatcher:
    """The U-Net (and the I2V resampler) as a core MODEL; ``resampler`` overrides the shape-read config,
    ``unet_overrides`` the U-Net fields weights cannot show (``unet_overrides_from_metadata``)."""
    check_videocrafter(node, sd)
    unet_sd = _strip(sd, UNET_PREFIX)
    variant = detect_variant(unet_sd)
    unet_config = unet_config_from_weights({k: tuple(v.shape) for k, v in unet_sd.items()}, variant.unet)
    unet_config = unet_config.replace(**(unet_overrides or {}))
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


SD_VAE_WIDTH = 128  # SD's VAE ``ch``: core builds that size itself
OPENCLIP_H_TEXT_WIDTH = 1024
OPENCLIP_H_VISION_WIDTH = 1280


def _count(sd: dict, prefix: str) -> int:
    """Number of ``{prefix}{i}.`` blocks in ``sd``."""
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def vae_ddconfig(vae_sd: dict) -> dict:
    """The SD VAE's ``ddconfig`` with every size read from the weights (for small VAEs of that layout)."""
    ch = vae_sd["encoder.conv_in.weight"].shape[0]
    levels = _count(vae_sd, "encoder.down.")
    mult = [vae_sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)]
    return {
        "double_z": True,
        "z_channels": vae_sd["decoder.conv_in.weight"].shape[1],
        "resolution": 256,
        "in_channels": vae_sd["encoder.conv_in.weight"].shape[1],
        "out_ch": vae_sd["decoder.conv_out.weight"].shape[0],
        "ch": ch,
        "ch_mult": mult,
        "num_res_blocks": _count(vae_sd, "encoder.down.0.block."),
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def load_vae(sd: dict) -> comfy.sd.VAE | None:
    """SD's VAE as a core VAE; a smaller VAE of the same layout (the tiny model's) gets its sizes from its weights."""
    vae_sd = _strip(sd, VAE_PREFIX)
    if not vae_sd:
        return None
    if vae_sd["encoder.conv_in.weight"].shape[0] == SD_VAE_WIDTH:
        return comfy.sd.VAE(sd=vae_sd)
    config = {"params": {"embed_dim": vae_sd["post_quant_conv.weight"].shape[1], "ddconfig": vae_ddconfig(vae_sd)}}
    return comfy.sd.VAE(sd=vae_sd, config=config)


def _heads(width: int, real_width: int, real_heads: int) -> int:
    """Attention heads: the real encoder's, or for a smaller one heads of 64 channels (at least one)."""
    return real_heads if width == real_width else max(1, width // 64)


def text_config(sd: dict) -> dict | None:
    """A CLIPTextModel config for a text tower smaller than OpenCLIP-H (None: the real one, core's own config)."""
    width = sd[TEXT_PREFIX + "token_embedding.weight"].shape[1]
    layers = _count(sd, TEXT_PREFIX + "transformer.resblocks.")
    if width == OPENCLIP_H_TEXT_WIDTH and layers == 24:
        return None
    return {
        "hidden_act": "gelu",
        "hidden_size": width,
        "intermediate_size": sd[TEXT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_attention_heads": _heads(width, OPENCLIP_H_TEXT_WIDTH, 16),
        "num_hidden_layers": layers,
        "max_position_embeddings": sd[TEXT_PREFIX + "positional_embedding"].shape[0],
        "vocab_size": sd[TEXT_PREFIX + "token_embedding.weight"].shape[0],
        "projection_dim": sd[TEXT_PREFIX + "text_projection"].shape[1],
        "layer_norm_eps": 1e-05,
        "eos_token_id": 49407,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "model_type": "clip_text_model",
    }


def vision_config(sd: dict) -> dict | None:
    """A CLIPVisionModel config for an image tower smaller than OpenCLIP-H (None: the real one)."""
    width = sd[VISION_PREFIX + "conv1.weight"].shape[0]
    layers = _count(sd, VISION_PREFIX + "transformer.resblocks.")
    if width == OPENCLIP_H_VISION_WIDTH and layers == 32:
        return None
    patch = sd[VISION_PREFIX + "conv1.weight"].shape[-1]
    grid = round((sd[VISION_PREFIX + "positional_embedding"].shape[0] - 1) ** 0.5)
    return {
        "hidden_act": "gelu",
        "hidden_size": width,
        "image_size": patch * grid,
        "intermediate_size": sd[VISION_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": _heads(width, OPENCLIP_H_VISION_WIDTH, 16),
        "num_channels": 3,
        "num_hidden_layers": layers,
        "patch_size": patch,
        "projection_dim": sd[VISION_PREFIX + "proj"].shape[1],
    }


def load_clip(sd: dict, embedding_directory=None) -> comfy.sd.CLIP | None:
    """SD2's OpenCLIP ViT-H text encoder (penultimate layer) from ``cond_stage_model.model.*``."""
    if not any(k.startswith(TEXT_PREFIX) for k in sd):
        return None
    config = comfy.supported_models.SD20({"in_channels": 4})
    small = text_config(sd)
    clip_sd = config.process_clip_state_dict(dict(sd))
    target = config.clip_target()
    if small is not None:  # same tokenizer, penultimate layer and final norm; the model sized from the weights
        text_model = functools.partial(
            comfy.sd1_clip.SDClipModel,
            layer="hidden",
            layer_idx=-2,
            textmodel_json_config=small,
            special_tokens={"start": 49406, "end": 49407, "pad": 0},
            return_projected_pooled=True,
        )
        target = comfy.supported_models_base.ClipTarget(
            comfy.text_encoders.sd2_clip.SD2Tokenizer,
            functools.partial(comfy.sd1_clip.SD1ClipModel, clip_name="h", clip_model=text_model),
        )
    clip = comfy.sd.CLIP(
        target,
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
    small = vision_config(sd)
    if small is None:
        return comfy.clip_vision.load_clipvision_from_sd(vision_sd, prefix=VISION_PREFIX, convert_keys=True)
    handle, path = tempfile.mkstemp(suffix=".json")  # core's ClipVisionModel reads its config from a file
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(small, f)
        clip_vision = comfy.clip_vision.ClipVisionModel(path)
    finally:
        os.remove(path)
    clip_vision.load_sd(comfy.clip_vision.convert_to_transformers(vision_sd, VISION_PREFIX))
    return clip_vision
