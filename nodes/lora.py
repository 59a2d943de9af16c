"""The LoRA node: a CogVideoX LoRA as ModelPatcher weight patches on a clone of the model."""

from __future__ import annotations

import dataclasses
import logging

import folder_paths
from comfy.weight_adapter import LoRAAdapter
from comfy_api.latest import io

from ..cogvideox.loading import CogVideoXLoadError
from ..cogvideox.lora import ALPHA_MODES, LoRA, WeightDelta, linear_targets, load_lora
from ..cogvideox.quant import LowPrecisionLinear
from .common import CATEGORY, CheckedInputs, CogVideoXNodeError, ModelType, network, weight_key_prefix

log = logging.getLogger(__name__)


def lora_patches(lora: LoRA, prefix: str, net=None) -> dict:
    """``add_patches`` input: a core LoRA adapter per weight (``alpha`` = scale x rank, as
    ``comfy.weight_adapter.LoRAAdapter`` divides it by the rank) and a diff per LoRA bias.
    Layers of ``net`` that store their weight in fp8 / bf16 (``quant.LowPrecisionLinear``) are
    left out: ``compute_time_patches`` serves them."""
    modules = dict(net.named_modules()) if net is not None else {}
    patches = {}
    for name, layer in lora.layers.items():
        if not isinstance(modules.get(name), LowPrecisionLinear):
            patches[f"{prefix}{name}.weight"] = LoRAAdapter(set(), (layer.up, layer.down, layer.scale * layer.rank,
                                                                    None, None, None))
        if layer.up_bias is not None:
            patches[f"{prefix}{name}.bias"] = ("diff", (layer.scale * layer.up_bias.float(),))
    return patches


def compute_time_patches(lora: LoRA, prefix: str, net, strength: float) -> dict:
    """``add_weight_wrapper`` input for the layers of ``net`` that store their weight in fp8 / bf16:
    the LoRA added to the upcast weight on every call instead of being rounded into the storage
    dtype (fp8 would round most of a LoRA's difference away)."""
    modules = dict(net.named_modules())
    wrappers = {}
    for name, layer in lora.layers.items():
        module = modules.get(name)
        if isinstance(module, LowPrecisionLinear):
            wrappers[f"{prefix}{name}.weight"] = WeightDelta(layer, strength * layer.scale, module.stored_scale())
    return wrappers


class CogVideoXLoRA(CheckedInputs):
    DISPLAY_NAME = "CogVideoX LoRA"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXLoRA",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/loaders",
            description="Applies a CogVideoX LoRA (.safetensors from models/loras) to the model: diffusers/PEFT "
            "(transformer.transformer_blocks...lora_A/lora_B), CogVideoX-Fun/kohya (lora_unet__..., with .alpha) "
            "or ComfyUI (diffusion_model....) keys. The weights are patched when the model loads and restored "
            "afterwards, so changing the strength or removing the node needs no reload. Chain several.",
            inputs=[
                ModelType.Input("model", tooltip="From CogVideoX Model Loader or another CogVideoX LoRA."),
                io.Combo.Input(
                    "lora_name",
                    options=folder_paths.get_filename_list("loras"),
                    tooltip="The LoRA file in models/loras (.safetensors only; pickles are refused).",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-10.0,
                    max=10.0,
                    step=0.01,
                    tooltip="How much of the LoRA to add: W + strength x scale x up @ down. "
                    "0 gives the model unchanged, negative values subtract the LoRA.",
                ),
                io.Combo.Input(
                    "alpha_mode",
                    options=list(ALPHA_MODES),
                    default="auto",
                    tooltip="The LoRA's scale. auto: the file's alpha / rank (CogVideoX-Fun .alpha tensors, "
                    "diffusers' lora_adapter_metadata), 1 when the file has none. file: the file's alpha, an "
                    "error if it has none. one_over_rank: 1 / rank, for LoRAs exported from CogVideo's SAT "
                    "trainer (e.g. DimensionX), which were trained with alpha 1 and look oversaturated on auto.",
                ),
            ],
            outputs=[
                ModelType.Output(
                    display_name="model",
                    tooltip="The model with the LoRA patched in, for CogVideoX Sampler or another CogVideoX LoRA.",
                ),
                io.Model.Output(
                    display_name="core_model",
                    tooltip="The same patched model as a core MODEL, for KSampler / SamplerCustomAdvanced and core "
                    "model nodes.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, lora_name, strength, alpha_mode):
        return cls.validation_answer(lora_name=lora_name, strength=strength, alpha_mode=alpha_mode)

    @classmethod
    def execute(cls, model, lora_name, strength, alpha_mode) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(lora_name=lora_name, strength=strength, alpha_mode=alpha_mode)
        path = folder_paths.get_full_path("loras", lora_name)
        if path is None:
            raise CogVideoXNodeError(node, f"LoRA {lora_name!r} was not found in models/loras/; put it there and "
                                     "refresh the page.")
        patcher = model.patcher
        try:
            lora = load_lora(path, linear_targets(network(patcher)), alpha_mode)
        except CogVideoXLoadError as e:
            raise CogVideoXNodeError(node, f"cannot apply {lora_name!r}: {e}") from e
        if strength == 0:
            return io.NodeOutput(model, patcher)
        patched = patcher.clone()
        prefix, net = weight_key_prefix(patcher), network(patcher)
        patches = lora_patches(lora, prefix, net)
        applied = patched.add_patches(patches, strength)
        if len(applied) != len(patches):
            missing = sorted(set(patches) - set(applied))[:5]
            raise CogVideoXNodeError(node, f"{len(patches) - len(applied)} LoRA weights found no model weight, "
                                     f"e.g. {missing}")
        for key, fn in compute_time_patches(lora, prefix, net, strength).items():
            patched.add_weight_wrapper(key, fn)
        log.info("%s: %s at strength %g (%s)", node, lora_name, strength, lora.describe())
        return io.NodeOutput(dataclasses.replace(model, patcher=patched), patched)
