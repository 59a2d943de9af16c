"""The sampler node: CogVideoX's denoising loop with progress, previews and interrupts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import comfy.model_management as mm
import comfy.utils
import torch
from PIL import Image

from ..cogvideox import frames as fr
from ..cogvideox import pipeline, preview
from ..cogvideox.offload import enable_block_swap, resident_bytes
from ..cogvideox.samplers import SAMPLERS
from .common import CATEGORY, MODEL_TYPE, CogVideoXNodeError
from .latents import IMAGE_LATENT_KEY, IMAGE_SCALING_KEY

log = logging.getLogger(__name__)

SCHEDULERS = ["auto", *SAMPLERS]
PREVIEW_SIZE = 512


def _context(node: str, conditioning, which: str) -> tuple[torch.Tensor, dict]:
    if not conditioning:
        raise CogVideoXNodeError(node, f"the {which} conditioning is empty; connect CogVideoX Text Encode.")
    if len(conditioning) > 1:
        log.warning("%s: %d %s conditionings given; using the first", node, len(conditioning), which)
    cond, extra = conditioning[0]
    if cond.ndim != 3:
        raise CogVideoXNodeError(
            node,
            f"the {which} conditioning has shape {tuple(cond.shape)}; "
            "expected text embeddings [1, 226, 4096] from CogVideoX Text Encode.",
        )
    return cond, extra


@contextlib.contextmanager
def _on_device(node: str, model) -> Iterator[torch.device]:
    """Put the transformer where it computes, for the length of the ``with``.

    Without block swap ComfyUI's memory manager loads all of it. With the loader's ``block_swap``
    > 0 the memory manager only makes room for the part that stays on the GPU, the swapped blocks
    stay in CPU RAM and move in and out around their forward, and afterwards the whole model goes
    back to the offload device (so the manager's view stays true). Without a GPU both devices are
    the CPU and the moves are no-ops (the same code runs, which is what the tests exercise).
    """
    patcher = model.patcher
    count = int(model.options.get("block_swap", 0))
    device, offload = torch.device(patcher.load_device), torch.device(patcher.offload_device)
    if count <= 0:
        mm.load_models_gpu([patcher])
        yield device
        return
    mm.free_memory(resident_bytes(patcher.model, count) + mm.minimum_inference_memory(), device)
    swap = enable_block_swap(patcher.model, count, device, offload)
    try:
        yield device
    finally:
        swap.remove()
        patcher.model.to(offload)
        log.info("%s: block swap moved %d blocks in during the run", node, swap.loads)
        mm.soft_empty_cache()


class CogVideoXSampler:
    DISPLAY_NAME = "CogVideoX Sampler"
    DESCRIPTION = (
        "Denoises a CogVideoX video latent: text-to-video from CogVideoX Empty Latent, image-to-video from "
        "CogVideoX Image To Video, video-to-video from CogVideoX Video To Video with denoise < 1."
    )
    CATEGORY = f"{CATEGORY}/sampling"
    FUNCTION = "execute"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent, for CogVideoX VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "From CogVideoX Model Loader."}),
                "positive": ("CONDITIONING", {"tooltip": "What the video shows (CogVideoX Text Encode)."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from (may be an empty prompt)."}),
                "latent": ("LATENT", {"tooltip": "CogVideoX Empty Latent, Image To Video or Video To Video."}),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Seed of the initial noise (and of the DPM solver's noise).",
                    },
                ),
                "steps": (
                    "INT",
                    {"default": 50, "min": 1, "max": 1000, "tooltip": "Denoising steps (50 is the reference)."},
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 6.0,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance scale (6.0 is the reference); 1.0 disables "
                        "the negative pass.",
                    },
                ),
                "scheduler": (
                    SCHEDULERS,
                    {
                        "default": "auto",
                        "tooltip": "auto: the variant's reference solver "
                        "(DDIM for 2B, CogVideoX DPM for 5B and 1.5). euler and dpmpp_2m are "
                        "deterministic sigma-space solvers.",
                    },
                ),
                "dynamic_cfg": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Ramp the guidance up over the steps "
                        "with a cosine schedule, as CogVideoX 5B recommends.",
                    },
                ),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "1.0 for text/image-to-video; below 1 keeps that much of the input "
                        "video (video-to-video).",
                    },
                ),
            },
            "optional": {
                "cache_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 5.0,
                        "step": 0.01,
                        "round": 0.001,
                        "tooltip": "Step caching (TeaCache-like): skip the transformer on steps whose "
                        "timestep-modulated input changed less than this in total since the last computed step, "
                        "reusing that step's residual. 0 = off (exact). Higher is faster and less faithful. "
                        "The first 40% of the steps always run and at most 3 steps in a row are skipped. "
                        "On the shipped tiny model at 50 steps, 0.8 ran 28 of 50 steps (1.79x fewer transformer "
                        "calls) at >= 32.7 dB PSNR (median 36.2) against the uncached video over 8 prompts and seeds; "
                        "at 25 steps every skip costs more.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def execute(
        self,
        model,
        positive,
        negative,
        latent,
        seed,
        steps,
        cfg,
        scheduler,
        dynamic_cfg,
        denoise,
        cache_threshold=0.0,
        unique_id=None,
    ):
        node = self.DISPLAY_NAME
        variant = model.variant
        pos, pos_extra = _context(node, positive, "positive")
        neg, _ = _context(node, negative, "negative")
        image_latent = pos_extra.get(IMAGE_LATENT_KEY)
        if variant.is_i2v and image_latent is None:
            raise CogVideoXNodeError(
                node,
                f"the model is image-to-video ({variant.name}) but the conditioning "
                "carries no image. Put CogVideoX Image To Video between the text encoders "
                "and the sampler, or load a text-to-video model.",
            )
        if not variant.is_i2v and image_latent is not None:
            raise CogVideoXNodeError(
                node,
                f"the model is text-to-video ({variant.name}) but the conditioning "
                "carries an image. Load an image-to-video model (5b-i2v, 1.5-5b-i2v) or "
                "remove CogVideoX Image To Video.",
            )
        samples = latent["samples"]
        if samples.ndim != 5 or samples.shape[1] != 16:
            raise CogVideoXNodeError(
                node,
                f"the latent has shape {tuple(samples.shape)}; expected a CogVideoX "
                "video latent [batch, 16, frames, height/8, width/8] from CogVideoX Empty "
                "Latent (image latents of other models do not fit).",
            )
        problems = fr.trained_size_problems(variant.transformer, tuple(samples.shape))
        if problems:
            raise CogVideoXNodeError(
                node,
                f"{'; '.join(problems)} in the node that makes the latent "
                "(CogVideoX Empty Latent, CogVideoX Image To Video or CogVideoX Video To Video).",
            )
        if denoise <= 0:
            return (latent,)

        pbar = comfy.utils.ProgressBar(steps, node_id=unique_id)

        def callback(step: int, total: int, x0: torch.Tensor):
            mm.throw_exception_if_processing_interrupted()
            image = Image.fromarray(preview.latent_preview(x0).numpy())
            pbar.update_absolute(step + 1, total, ("JPEG", image, PREVIEW_SIZE))

        try:
            with _on_device(node, model) as device:
                out = pipeline.sample(
                    model.patcher.model,
                    variant,
                    samples.to(device, torch.float32),
                    pos.to(device),
                    neg.to(device),
                    steps=steps,
                    cfg=cfg,
                    sampler=scheduler,
                    seed=seed,
                    denoise=denoise,
                    dynamic_cfg=dynamic_cfg,
                    image_latent=None if image_latent is None else image_latent.to(device, torch.float32),
                    image_latent_scaling=pos_extra.get(IMAGE_SCALING_KEY, "diffusers"),
                    callback=callback,
                    cache_threshold=cache_threshold,
                )
        except FloatingPointError as e:
            raise CogVideoXNodeError(node, f"{e}: set weight_dtype to bf16 in CogVideoX Model Loader.") from e
        except ValueError as e:  # shape problems the model reports (channels, learned positions, ...)
            raise CogVideoXNodeError(node, str(e)) from e
        return ({**latent, "samples": out.to(mm.intermediate_device(), torch.float32)},)
