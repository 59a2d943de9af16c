"""Loader nodes: the transformer, the VAE and a T5 encoder, from ComfyUI's model folders."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.text_encoders.sd3_clip
import comfy.text_encoders.t5
import folder_paths
import torch
from comfy_api.latest import io

from ..cogvideox import loading, quant
from ..cogvideox.attention import available_backends, set_attention_backend
from ..cogvideox.compile import compile_blocks
from ..cogvideox.text import read_t5
from .common import (
    CATEGORY,
    DTYPES,
    CheckedInputs,
    CogVideoXModel,
    CogVideoXNodeError,
    CogVideoXVAE,
    ModelType,
    VAEType,
    model_choices,
    resolve_model_path,
    torch_dtype,
)
from .core_model import CogVideoXCoreModel, add_sampling_checks
from .core_vae import core_vae

log = logging.getLogger(__name__)

# Optional weight storage of the block linears (cogvideox/quant.py); "default" keeps weight_dtype.
WEIGHT_STORAGE = {"default": None, "fp8_e4m3fn": "fp8", "fp8_e5m2": "fp8_e5m2", "bf16": "bf16", "fp16": "fp16"}


FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def pick_operations(stored: set, compute_dtype, load_device) -> tuple[object, tuple]:
    """The ``comfy.ops`` layer classes for weights stored in ``stored`` dtypes computing in
    ``compute_dtype``, as ComfyUI picks them for its own models; and the stored dtypes to keep.

    fp8 weights stay fp8 and run through ``manual_cast`` (or fp8 matmuls where ComfyUI enables
    them); everything else is cast to ``compute_dtype`` on load and uses ``disable_weight_init``.
    Both let ComfyUI's low-VRAM mode stream the weights and apply LoRA patches to streamed layers.
    """
    fp8 = tuple(d for d in FP8_DTYPES if d in stored)
    weight_dtype = fp8[0] if fp8 else compute_dtype
    return comfy.ops.pick_operations(weight_dtype, compute_dtype, load_device=load_device), fp8


class CogVideoXModelLoader(CheckedInputs):
    DISPLAY_NAME = "CogVideoX Model Loader"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXModelLoader",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/loaders",
            description="Loads a CogVideoX transformer (2B, 5B, 5B-I2V, 1.5-5B T2V/I2V) from a single .safetensors "
            "file in models/diffusion_models or a diffusers folder (models/diffusers/<name>/transformer or "
            "models/CogVideo/<name>/transformer). The variant is detected from the weights. The model joins "
            "ComfyUI's memory manager, so it is offloaded when other models need the device.",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=model_choices("diffusion_models", "transformer"),
                    tooltip="The transformer weights: a file in models/diffusion_models or a diffusers folder.",
                ),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(DTYPES),
                    default="auto",
                    tooltip="Precision of the weights. auto: bf16 on GPUs that support it, else fp16; "
                    "fp32 on the CPU. Use bf16 if fp16 gives black or NaN frames.",
                ),
                io.Combo.Input(
                    "weight_storage",
                    options=list(WEIGHT_STORAGE),
                    default="default",
                    optional=True,
                    tooltip="How the big linear layers of the transformer blocks are stored. default: in "
                    "weight_dtype. fp8_e4m3fn / fp8_e5m2: a quarter of fp32's memory (per-tensor scale), "
                    "upcast to weight_dtype for each matmul. bf16 / fp16: half of fp32, same upcast.",
                ),
                io.Combo.Input(
                    "attention",
                    options=available_backends(),
                    default="sdpa",
                    optional=True,
                    tooltip="Attention kernel: sdpa (PyTorch, default), math (reference, slow), "
                    "sage (only listed when sageattention is installed).",
                ),
                io.Boolean.Input(
                    "compile",
                    default=False,
                    optional=True,
                    tooltip="torch.compile each transformer block. The first run compiles (minutes); "
                    "later runs of the same size are faster. Needs a working compiler toolchain.",
                ),
                io.Int.Input(
                    "block_swap",
                    default=0,
                    min=0,
                    max=64,
                    optional=True,
                    tooltip="Block swap: keep this many transformer blocks in CPU RAM and move each to the "
                    "GPU only while it runs, to fit big models in little VRAM (slower: one copy per block "
                    "and step). 0 = off. Has no effect without a GPU.",
                ),
            ],
            outputs=[
                ModelType.Output(display_name="model", tooltip="The CogVideoX transformer, for CogVideoX Sampler."),
                io.String.Output(display_name="variant", tooltip="The detected variant, e.g. 5b-i2v."),
                io.Model.Output(
                    display_name="core_model",
                    tooltip="The same transformer as a core MODEL, for core KSampler / SamplerCustomAdvanced, "
                    "guiders, LoraLoaderModelOnly and the context-window nodes (dim 2 is the frame axis). Sample "
                    "CogVideoX latents (CogVideoX Empty Latent / Image To Video) with it.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name, weight_dtype, weight_storage="default", attention="sdpa", block_swap=0):
        return cls.validation_answer(
            model_name=model_name, weight_dtype=weight_dtype, weight_storage=weight_storage, attention=attention,
            block_swap=block_swap,
        )

    @classmethod
    def execute(
        cls, model_name, weight_dtype, weight_storage="default", attention="sdpa", compile=False, block_swap=0
    ) -> io.NodeOutput:
        cls.check_inputs(
            model_name=model_name, weight_dtype=weight_dtype, weight_storage=weight_storage, attention=attention,
            block_swap=block_swap,
        )
        path = resolve_model_path(cls.DISPLAY_NAME, "diffusion_models", model_name)
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        dtype = torch_dtype(weight_dtype, load_device)
        try:
            operations, keep = pick_operations(loading.stored_dtypes(path, "transformer"), dtype, load_device)
            model, variant = loading.load_transformer(
                path, dtype=dtype, device=offload_device, operations=operations, keep_dtypes=keep
            )
        except loading.CogVideoXLoadError as e:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, f"cannot load {model_name!r}: {e}") from e
        if keep and WEIGHT_STORAGE.get(weight_storage):
            log.info("CogVideoX: %s is stored in %s already; weight_storage %s is not applied", model_name, keep[0],
                     weight_storage)  # fmt: skip
            weight_storage = "default"
        try:
            if WEIGHT_STORAGE.get(weight_storage):
                quant.store_weights(model, WEIGHT_STORAGE[weight_storage], compute_dtype=dtype)
            set_attention_backend(model, attention)
        except ValueError as e:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, f"{e}. Pick another option.") from e
        if compile:
            compile_blocks(model)
        core = CogVideoXCoreModel(model, variant, device=offload_device)
        patcher = comfy.model_patcher.ModelPatcher(core, load_device=load_device, offload_device=offload_device)
        add_sampling_checks(patcher)
        log.info("CogVideoX: loaded %s as variant %s (%s, storage %s)", model_name, variant.name, dtype, weight_storage)
        model_out = CogVideoXModel(patcher, variant, source=model_name, options={"block_swap": int(block_swap)})
        return io.NodeOutput(model_out, variant.name, patcher)


class CogVideoXVAELoader(CheckedInputs):
    DISPLAY_NAME = "CogVideoX VAE Loader"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXVAELoader",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/loaders",
            description="Loads the CogVideoX 3D causal VAE from a .safetensors file in models/vae or a diffusers "
            "folder's vae/. The same VAE serves every CogVideoX variant; the latent scale follows the model.",
            inputs=[
                io.Combo.Input(
                    "vae_name",
                    options=model_choices("vae", "vae"),
                    tooltip="The VAE weights: a file in models/vae or a diffusers folder's vae/.",
                ),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(DTYPES),
                    default="auto",
                    tooltip="Precision of the VAE weights (auto: bf16 on GPU, fp32 on CPU).",
                ),
            ],
            outputs=[
                VAEType.Output(
                    display_name="vae", tooltip="The CogVideoX VAE, for the encode, decode and image-to-video nodes."
                ),
                io.Vae.Output(
                    display_name="core_vae",
                    tooltip="The same VAE (same weights in memory) for core nodes: VAE Decode, VAE Encode, VAE "
                    "Decode (Tiled) with its temporal tile, VAE Encode (Tiled). Latents are raw VAE space, like this "
                    "pack's LATENT.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, vae_name, weight_dtype):
        return cls.validation_answer(vae_name=vae_name, weight_dtype=weight_dtype)

    @classmethod
    def execute(cls, vae_name, weight_dtype) -> io.NodeOutput:
        cls.check_inputs(vae_name=vae_name, weight_dtype=weight_dtype)
        path = resolve_model_path(cls.DISPLAY_NAME, "vae", vae_name)
        load_device, offload_device = mm.vae_device(), mm.vae_offload_device()
        dtype = torch_dtype(weight_dtype, load_device)
        try:
            operations, _ = pick_operations(set(), dtype, load_device)
            vae = loading.load_vae(path, dtype=dtype, device=offload_device, operations=operations)
            rgb_projection = None
        except loading.CogVideoXLoadError as e:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, f"cannot load {vae_name!r}: {e}") from e
        patcher = comfy.model_patcher.ModelPatcher(vae, load_device=load_device, offload_device=offload_device)
        ours = CogVideoXVAE(patcher, source=vae_name, rgb_projection=rgb_projection)
        return io.NodeOutput(ours, core_vae(ours))


def _t5_clip_target(config: dict):
    """A core CLIP target for a T5 encoder of any size, tokenised like T5-XXL."""

    class T5Encoder(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options=None):
            super().__init__(
                device=device,
                layer=layer,
                layer_idx=layer_idx,
                textmodel_json_config=dict(config),
                dtype=dtype,
                special_tokens={"end": 1, "pad": 0},
                model_class=comfy.text_encoders.t5.T5,
                enable_attention_masks=False,
                return_attention_masks=False,
                model_options={**(model_options or {}), "model_name": "t5xxl"},
            )

    class T5Model(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            super().__init__(
                device=device, dtype=dtype, name="t5xxl", clip_model=T5Encoder, model_options=model_options or {}
            )

    class T5Tokenizer(comfy.sd1_clip.SD1Tokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data=None):
            super().__init__(
                embedding_directory=embedding_directory,
                tokenizer_data=tokenizer_data or {},
                clip_name="t5xxl",
                tokenizer=comfy.text_encoders.sd3_clip.T5XXLTokenizer,
            )

    target = type("CogVideoXT5Target", (), {})()
    target.params, target.clip, target.tokenizer = {}, T5Model, T5Tokenizer
    return target


class CogVideoXT5Loader(CheckedInputs):
    DISPLAY_NAME = "CogVideoX T5 Loader"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXT5Loader",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/loaders",
            description="Loads a T5 encoder of any size as a CLIP for CogVideoX Text Encode: a diffusers pipeline's "
            "text_encoder/ folder, T5-XXL from models/text_encoders, or the small encoder of the shipped tiny "
            "model. T5-XXL files also load with core Load CLIP (type sd3).",
            inputs=[
                io.Combo.Input(
                    "t5_name",
                    options=model_choices("text_encoders", "text_encoder"),
                    tooltip="T5 encoder weights: a file in models/text_encoders or a diffusers text_encoder/.",
                ),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(DTYPES),
                    default="auto",
                    tooltip="Precision of the encoder (auto: ComfyUI's text-encoder choice).",
                ),
            ],
            outputs=[
                io.Clip.Output(
                    display_name="clip",
                    tooltip="A core CLIP holding the T5 encoder and the T5 tokenizer that ComfyUI ships.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, t5_name, weight_dtype):
        return cls.validation_answer(t5_name=t5_name, weight_dtype=weight_dtype)

    @classmethod
    def execute(cls, t5_name, weight_dtype) -> io.NodeOutput:
        cls.check_inputs(t5_name=t5_name, weight_dtype=weight_dtype)
        path = resolve_model_path(cls.DISPLAY_NAME, "text_encoders", t5_name)
        try:
            state_dict, config = read_t5(path)
        except ValueError as e:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, f"cannot load {t5_name!r}: {e}") from e
        options = {} if DTYPES[weight_dtype] is None else {"dtype": torch_dtype(weight_dtype, mm.get_torch_device())}
        parameters = sum(t.numel() for t in state_dict.values())
        clip = comfy.sd.CLIP(
            _t5_clip_target(config),
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
            parameters=parameters,
            model_options=options,
        )
        missing, unexpected = clip.load_sd(state_dict)
        missing = [k for k in missing if not k.endswith("relative_attention_bias.weight") or ".0." in k]
        if missing:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, f"{t5_name!r} lacks T5 weights, e.g. {missing[:3]}")
        return io.NodeOutput(clip)
