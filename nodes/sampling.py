"""The sampler node: CogVideoX's denoising loop with progress, previews and interrupts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io
from PIL import Image

from ..cogvideox import frames as fr
from ..cogvideox import pipeline, preview
from ..cogvideox.cache import PLANS as CACHE_PLANS
from ..cogvideox.configs import FUN_CONTROL, FUN_INPAINT
from ..cogvideox.offload import enable_block_swap, resident_bytes
from ..cogvideox.samplers import SAMPLERS
from . import sampler_checks as checks
from .common import CATEGORY, CheckedInputs, CogVideoXNodeError, ModelType, network
from .fun import (
    CONCAT_LATENT_KEY,
    CONCAT_MASK_KEY,
    FUN_KIND_KEY,
    CogVideoXFunControlConditioning,
    CogVideoXFunInpaintConditioning,
)
from .latents import IMAGE_LATENT_KEY, IMAGE_SCALING_KEY

log = logging.getLogger(__name__)

SCHEDULERS = ["auto", *SAMPLERS]
PREVIEW_SIZE = 512


def _context(node: str, conditioning, which: str, variant) -> tuple[torch.Tensor, dict]:
    cfg = variant.transformer
    problems = checks.conditioning_problems(conditioning, which, cfg.max_text_seq_length, cfg.text_embed_dim)
    if problems:
        raise CogVideoXNodeError(node, "; ".join(problems))
    return conditioning[0]


def _fun_inputs(node: str, variant, extra: dict, image_latent) -> dict:
    """``concat_latent`` / ``concat_mask`` for a CogVideoX-Fun model, with the errors of mixed-up graphs."""
    kind = extra.get(FUN_KIND_KEY)
    fun_node = {FUN_INPAINT: CogVideoXFunInpaintConditioning, FUN_CONTROL: CogVideoXFunControlConditioning}
    if variant.fun is None:
        if kind is not None:
            raise CogVideoXNodeError(
                node,
                f"the conditioning comes from {fun_node[kind].DISPLAY_NAME}, which is for CogVideoX-Fun "
                f"{kind} models, but the model is {variant.name}. Load a CogVideoX-Fun {kind} model, or use "
                "CogVideoX Image To Video / CogVideoX Empty Latent for this one.",
            )
        return {}
    wanted = fun_node[variant.fun].DISPLAY_NAME
    if kind is None:
        got = "CogVideoX Image To Video conditioning (for I2V models)" if image_latent is not None else "none"
        raise CogVideoXNodeError(
            node,
            f"the model is CogVideoX-Fun {variant.fun} ({variant.name}) and needs its conditioning, got {got}. "
            f"Put {wanted} between the text encoders and the sampler"
            + (
                " (its start_image takes your first frame; with no inputs it is text-to-video)."
                if variant.fun == FUN_INPAINT
                else ", fed with a control video."
            ),
        )
    if kind != variant.fun:
        raise CogVideoXNodeError(
            node,
            f"the conditioning is from {fun_node[kind].DISPLAY_NAME} but the model is CogVideoX-Fun "
            f"{variant.fun} ({variant.name}); use {wanted} or load a Fun {kind} model.",
        )
    return {"concat_latent": extra.get(CONCAT_LATENT_KEY), "concat_mask": extra.get(CONCAT_MASK_KEY)}


def _patch_weights(patcher) -> None:
    """Apply the patcher's weight patches (LoRAs) where the weights are, for a model the memory
    manager does not load (block swap). Another clone's patches are taken off first (the clones
    share one backup of the original weights); patches already in place stay."""
    model = patcher.model
    current = getattr(model, "current_weight_patches_uuid", None)
    if current is not None and current == patcher.patches_uuid:
        return
    if current is not None:
        patcher.unpatch_model(patcher.offload_device)
    patcher.patch_model(device_to=patcher.offload_device)


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
    net = network(patcher)
    count = int(model.options.get("block_swap", 0))
    device, offload = torch.device(patcher.load_device), torch.device(patcher.offload_device)
    if count <= 0:
        mm.load_models_gpu([patcher])
        yield device
        return
    mm.free_memory(resident_bytes(net, count) + mm.minimum_inference_memory(), device)
    _patch_weights(patcher)
    swap = enable_block_swap(net, count, device, offload)
    try:
        yield device
    finally:
        swap.remove()
        net.to(offload)
        log.info("%s: block swap moved %d blocks in during the run", node, swap.loads)
        mm.soft_empty_cache()


def _checked_conditioning(node: str, model, positive, negative, latent) -> tuple:
    """The text contexts, the positive's extras, the image latent and the Fun inputs, after every check of
    the conditioning and the latent against the model (each error says what to connect instead)."""
    variant = model.variant
    pos, pos_extra = _context(node, positive, "positive", variant)
    neg, _ = _context(node, negative, "negative", variant)
    image_latent = pos_extra.get(IMAGE_LATENT_KEY)
    if image_latent is None and FUN_KIND_KEY not in pos_extra:  # core nodes' image-to-video key
        image_latent = pos_extra.get(CONCAT_LATENT_KEY)
    fun = _fun_inputs(node, variant, pos_extra, image_latent)
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
    problems = checks.latent_problems(latent)
    if image_latent is not None:
        problems += checks.image_latent_problems(image_latent, samples)
    if not torch.isfinite(samples).all():
        problems.append("the latent holds NaN or infinite values; check the node that makes it")
    if problems:
        raise CogVideoXNodeError(node, "; ".join(problems))
    problems = fr.trained_size_problems(variant.transformer, tuple(samples.shape))
    if problems:
        raise CogVideoXNodeError(
            node,
            f"{'; '.join(problems)} in the node that makes the latent "
            "(CogVideoX Empty Latent, CogVideoX Image To Video or CogVideoX Video To Video).",
        )
    return pos, neg, pos_extra, image_latent, fun


def _sample(node: str, model, samples, pos, neg, pos_extra, image_latent, fun, callback, **options) -> torch.Tensor:
    """Runs the library's sampler on the model's device; errors of the run name the node and the cause."""
    try:
        with _on_device(node, model) as device:
            return pipeline.sample(
                network(model.patcher),
                model.variant,
                samples.to(device, torch.float32),
                pos.to(device),
                neg.to(device),
                image_latent=None if image_latent is None else image_latent.to(device, torch.float32),
                image_latent_scaling=pos_extra.get(IMAGE_SCALING_KEY, "diffusers"),
                **{k: None if v is None else v.to(device, torch.float32) for k, v in fun.items()},
                callback=callback,
                **options,
            )
    except FloatingPointError as e:
        cause = checks.non_finite_cause(network(model.patcher), model.source)
        raise CogVideoXNodeError(node, f"{str(e).split(';')[0]}; {cause}") from e
    except ValueError as e:  # shape problems the model reports (channels, learned positions, ...)
        raise CogVideoXNodeError(node, str(e)) from e


class CogVideoXSampler(CheckedInputs):
    DISPLAY_NAME = "CogVideoX Sampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXSampler",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/sampling",
            description="Denoises a CogVideoX video latent: text-to-video from CogVideoX Empty Latent, image-to-video "
            "from CogVideoX Image To Video, video-to-video from CogVideoX Video To Video with denoise < 1, "
            "CogVideoX-Fun from CogVideoX Fun Inpaint / Control Conditioning.",
            inputs=[
                ModelType.Input("model", tooltip="From CogVideoX Model Loader."),
                io.Conditioning.Input("positive", tooltip="What the video shows (CogVideoX Text Encode)."),
                io.Conditioning.Input("negative", tooltip="What to steer away from (may be an empty prompt)."),
                io.Latent.Input("latent", tooltip="CogVideoX Empty Latent, Image To Video or Video To Video."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Seed of the initial noise (and of the DPM solver's noise).",
                ),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Denoising steps (50 is the reference)."),
                io.Float.Input(
                    "cfg",
                    default=6.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance scale (6.0 is the reference); 1.0 and below "
                    "disable the negative pass (values below 1 act as 1, as in the reference pipelines).",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=SCHEDULERS,
                    default="auto",
                    tooltip="auto: the variant's reference solver "
                    "(DDIM for 2B, CogVideoX DPM for 5B and 1.5). euler and dpmpp_2m are "
                    "deterministic sigma-space solvers.",
                ),
                io.Boolean.Input(
                    "dynamic_cfg",
                    default=False,
                    tooltip="Ramp the guidance up over the steps "
                    "with a cosine schedule, as CogVideoX 5B recommends.",
                ),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="1.0 for text/image-to-video; below 1 keeps that much of the input "
                    "video (video-to-video).",
                ),
                io.Float.Input(
                    "cache_threshold",
                    default=0.0,
                    min=0.0,
                    max=5.0,
                    step=0.01,
                    round=0.001,
                    optional=True,
                    tooltip="Step caching (TeaCache-like): skip the transformer on steps whose "
                    "timestep-modulated input changed less than this in total since the last computed step, "
                    "reusing that step's residual. 0 = off (exact). Higher is faster and less faithful. "
                    "The first 40% of the steps always run and at most 3 steps in a row are skipped. "
                    "On the shipped tiny model at 50 steps and the template's CFG 2.5, 0.8 ran 28 of 50 steps "
                    "(1.79x fewer transformer calls) at >= 29.4 dB PSNR (median 35.1; at CFG 6: 27.6) against the "
                    "uncached video over 8 prompts and seeds; "
                    "cache_plan calibrated does better.",
                ),
                io.Combo.Input(
                    "cache_plan",
                    options=list(CACHE_PLANS),
                    default="adaptive",
                    optional=True,
                    tooltip="Which steps step caching may skip (only with cache_threshold > 0). adaptive: the "
                    "rule above (first 40% of the steps always run, at most 3 skipped in a row). calibrated: "
                    "the skip plan calibrated on the shipped tiny model at CFG 2.5 for the step count nearest "
                    "yours, the reused residual extrapolated half way along its last change "
                    "(tools/cache_calibrate.py; 50 steps: 23 computed at >= 30.8 dB with cache_threshold 5, where "
                    "the plan alone decides, 24 at >= 32.4 dB at 0.8; 25 steps: 15 at >= 32.3 dB). Higher CFG "
                    "scales a skipped step's error; on other models and settings measure before trusting it.",
                ),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent, for CogVideoX VAE Decode.")],
            hidden=[io.Hidden.unique_id],  # the node whose progress bar shows the previews
        )

    @classmethod
    def validate_inputs(cls, seed, steps, cfg, scheduler, denoise, cache_threshold=0.0, cache_plan="adaptive"):
        return cls.validation_answer(
            seed=seed, steps=steps, cfg=cfg, scheduler=scheduler, denoise=denoise, cache_threshold=cache_threshold,
            cache_plan=cache_plan,
        )

    @classmethod
    def execute(
        cls,
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
        cache_plan="adaptive",
    ) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(
            seed=seed, steps=steps, cfg=cfg, scheduler=scheduler, denoise=denoise, cache_threshold=cache_threshold,
            cache_plan=cache_plan,
        )
        if cfg < 1.0:
            log.warning("%s: cfg %.2f below 1 acts as 1 (no guidance, the negative prompt is not used)", node, cfg)
        pos, neg, pos_extra, image_latent, fun = _checked_conditioning(node, model, positive, negative, latent)
        if denoise <= 0:
            return io.NodeOutput(latent)
        pbar = comfy.utils.ProgressBar(steps, node_id=cls.hidden.unique_id if cls.hidden else None)
        # the VAE's latent-to-RGB projection (raw latents, as x0 comes here), or principal components
        projection = None if model.variant.latent_rgb is None else torch.tensor(model.variant.latent_rgb)

        def callback(step: int, total: int, x0: torch.Tensor):
            mm.throw_exception_if_processing_interrupted()
            image = Image.fromarray(preview.latent_preview(x0, projection).numpy())
            pbar.update_absolute(step + 1, total, ("JPEG", image, PREVIEW_SIZE))

        out = _sample(
            node, model, latent["samples"], pos, neg, pos_extra, image_latent, fun, callback, steps=steps, cfg=cfg,
            sampler=scheduler, seed=seed, denoise=denoise, dynamic_cfg=dynamic_cfg, cache_threshold=cache_threshold,
            cache_plan=cache_plan,
        )
        return io.NodeOutput({**latent, "samples": out.to(mm.intermediate_device(), torch.float32)})
