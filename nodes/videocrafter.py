"""VideoCrafter1/2 nodes: checkpoint loader, image conditioning, frame rate, empty latent, sampler.

Everything travels in core types (MODEL, CLIP, VAE, CLIP_VISION, CONDITIONING, LATENT), so core
CLIP Text Encode, KSampler and VAE Decode work with them; VideoCrafter Sampler is the
reference's own DDIM (eta, uniform steps, ``use_scale``), step for step.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io
from einops import rearrange

from ..videocrafter._shared import randn_noise
from ..videocrafter.image import clip_image_input, unconditional_image
from ..videocrafter.sampling import guided_predictor, sample_ddim
from ..videocrafter.schedule import make_ddim_schedule
from ..videocrafter.unet import VideoCrafterUNet
from . import videocrafter_loading as loading
from .common import CATEGORY, CheckedInputs, CogVideoXNodeError
from .videocrafter_model import VideoCrafterBaseModel

VC_CATEGORY = f"{CATEGORY}/VideoCrafter"
LATENT_CHANNELS = 4


def videocrafter_model(node: str, model) -> VideoCrafterBaseModel:
    """The VideoCrafter core model inside a MODEL, or an error that says what was given."""
    inner = getattr(model, "model", None)
    if not isinstance(inner, VideoCrafterBaseModel):
        raise CogVideoXNodeError(
            node,
            f"this MODEL is not a VideoCrafter model ({type(inner).__name__}): load one with VideoCrafter "
            "Checkpoint Loader (CogVideoX models go to CogVideoX Sampler)",
        )
    return inner


def video_latent(node: str, latent: dict) -> torch.Tensor:
    """``[T, 4, h, w]`` frames of a VideoCrafter LATENT, or an error naming what it is."""
    samples = latent["samples"]
    if samples.ndim == 5:
        raise CogVideoXNodeError(
            node,
            f"this LATENT is a {samples.shape[1]}-channel 3D-VAE video latent {tuple(samples.shape)} (CogVideoX): "
            "VideoCrafter latents are SD latents with frames as the batch; make one with VideoCrafter Empty Latent",
        )
    if samples.ndim != 4 or samples.shape[1] != LATENT_CHANNELS:
        raise CogVideoXNodeError(node, f"expected a [frames, 4, height/8, width/8] latent, got {tuple(samples.shape)}")
    return samples


class VideoCrafterCheckpointLoader(CheckedInputs):
    DISPLAY_NAME = "VideoCrafter Checkpoint Loader"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VideoCrafterCheckpointLoader",
            display_name=cls.DISPLAY_NAME,
            category=VC_CATEGORY,
            description="Loads a VideoCrafter1/2 checkpoint (T2V 1024 v1.0, T2V 512 v1.0, I2V 512 v1.0, "
            "VideoCrafter2 T2V 512) converted to .safetensors with tools/convert_videocrafter.py, from "
            "models/checkpoints. The variant is detected from the weights. Gives core types: the U-Net as MODEL, "
            "SD2's OpenCLIP-H text encoder as CLIP, SD's VAE as VAE and, for I2V, OpenCLIP-H's image tower as "
            "CLIP_VISION (None for T2V).",
            inputs=[
                io.Combo.Input(
                    "ckpt_name",
                    options=folder_paths.get_filename_list("checkpoints"),
                    tooltip="A converted VideoCrafter checkpoint (.safetensors) in models/checkpoints.",
                )
            ],
            outputs=[
                io.Model.Output(
                    display_name="model",
                    tooltip="The 3D U-Net with VideoCrafter's schedule (use_scale included): for VideoCrafter "
                    "Sampler or KSampler.",
                ),
                io.Clip.Output(
                    display_name="clip",
                    tooltip="The text encoder (CLIP Text Encode; the reference's unconditional is the empty prompt).",
                ),
                io.Vae.Output(
                    display_name="vae", tooltip="SD's 2D VAE; decodes the frames of a VideoCrafter latent with core "
                    "VAE Decode."
                ),
                io.ClipVision.Output(
                    display_name="clip_vision",
                    tooltip="The image encoder of I2V checkpoints, for VideoCrafter Image Conditioning (None for T2V).",
                ),
                io.String.Output(display_name="variant", tooltip="The detected variant, e.g. i2v-512-v1.0."),
            ],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name):
        return cls.validation_answer(ckpt_name=ckpt_name)

    @classmethod
    def execute(cls, ckpt_name) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(ckpt_name=ckpt_name)
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            raise CogVideoXNodeError(node, f"{ckpt_name!r} is not in models/checkpoints; put it there and refresh")
        if not path.endswith(".safetensors"):
            raise CogVideoXNodeError(
                node,
                "only .safetensors files are read (pickled model.ckpt files can run code): convert it once with "
                "tools/convert_videocrafter.py",
            )
        sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
        patcher = loading.load_model(
            node,
            sd,
            resampler=loading.resampler_from_metadata(metadata),
            unet_overrides=loading.unet_overrides_from_metadata(metadata),
        )
        embeddings = folder_paths.get_folder_paths("embeddings")
        model = patcher.model
        return io.NodeOutput(
            patcher,
            loading.load_clip(sd, embeddings),
            loading.load_vae(sd),
            loading.load_clip_vision(sd),
            model.variant.name,
        )


class VideoCrafterImageConditioning(CheckedInputs):
    DISPLAY_NAME = "VideoCrafter Image Conditioning"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VideoCrafterImageConditioning",
            display_name=cls.DISPLAY_NAME,
            category=VC_CATEGORY,
            description="Image-to-video conditioning as the reference builds it: the image is resized to 224x224 (no "
            "crop), encoded by the CLIP vision model (all 257 tokens of the last layer, no final norm), projected by "
            "the model's resampler to 16 tokens and appended after the 77 text tokens. The negative gets the tokens "
            "of the reference's unconditional image (mid grey).",
            inputs=[
                io.Conditioning.Input("positive", tooltip="CLIP Text Encode of the prompt."),
                io.Conditioning.Input("negative", tooltip="CLIP Text Encode of the negative (reference: empty)."),
                io.Model.Input("model", tooltip="An image-to-video VideoCrafter model (its resampler is used)."),
                io.ClipVision.Input("clip_vision", tooltip="The checkpoint loader's CLIP_VISION output."),
                io.Image.Input("image", tooltip="The image to animate (the first of a batch is used)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Text + image tokens."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative text + unconditional-image tokens."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, model, clip_vision, image) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        base = videocrafter_model(node, model)
        if base.image_proj_model is None:
            raise CogVideoXNodeError(
                node,
                f"{base.variant.name} is a text-to-video model: image conditioning needs the I2V checkpoint "
                "(i2v-512-v1.0); for text-to-video connect CLIP Text Encode straight to the sampler",
            )
        if clip_vision is None:
            raise CogVideoXNodeError(node, "no CLIP_VISION: connect the I2V checkpoint loader's clip_vision output")
        tokens = cls._image_tokens(base, clip_vision, image[:1])
        uncond = cls._image_tokens(base, clip_vision, unconditional_image(1))
        return io.NodeOutput(_append_tokens(node, positive, tokens), _append_tokens(node, negative, uncond))

    @staticmethod
    def _image_tokens(base: VideoCrafterBaseModel, clip_vision, image: torch.Tensor) -> torch.Tensor:
        mm.load_model_gpu(clip_vision.patcher)
        device = clip_vision.load_device
        pixels = clip_image_input(image.to(device))
        hidden = clip_vision.model(pixel_values=pixels, intermediate_output=-2)[0]  # [1, 257, 1280] last layer
        resampler = base.image_proj_model.to(device)
        with torch.no_grad():
            out = resampler(hidden.float())  # [1, 16, context_dim]
        base.image_proj_model.to(mm.unet_offload_device())
        return out.to(mm.intermediate_device())


def _append_tokens(node: str, conditioning, tokens: torch.Tensor):
    out = []
    for cond, extra in conditioning:
        if cond.shape[1] != 77:
            raise CogVideoXNodeError(
                node, f"expected 77 text tokens from CLIP Text Encode, got {cond.shape[1]} (already conditioned?)"
            )
        if cond.shape[-1] != tokens.shape[-1]:
            raise CogVideoXNodeError(node, f"text width {cond.shape[-1]} != image token width {tokens.shape[-1]}")
        image = tokens.to(cond.dtype).expand(cond.shape[0], -1, -1)
        out.append([torch.cat([cond, image], dim=1), dict(extra)])
    return out


class VideoCrafterFPS(CheckedInputs):
    DISPLAY_NAME = "VideoCrafter FPS"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VideoCrafterFPS",
            display_name=cls.DISPLAY_NAME,
            category=VC_CATEGORY,
            description="Sets the frame rate the fps-conditioned models (T2V 1024, I2V 512, VideoCrafter2) are told: "
            "lower means more motion between frames. Without it the reference's per-variant default is used "
            "(28 for T2V 1024, 8 for the 512 models). The December 2023 T2V 512 v1.0 model ignores it.",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="Apply to both positive and negative."),
                io.Int.Input("fps", default=8, min=1, max=120, tooltip="Frames per second to condition on."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The conditioning with the frame rate set.")],
        )

    @classmethod
    def validate_inputs(cls, fps):
        return cls.validation_answer(fps=fps)

    @classmethod
    def execute(cls, conditioning, fps) -> io.NodeOutput:
        cls.check_inputs(fps=fps)
        return io.NodeOutput([[c, {**extra, "fps": int(fps)}] for c, extra in conditioning])


class VideoCrafterEmptyLatent(CheckedInputs):
    DISPLAY_NAME = "VideoCrafter Empty Latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        size = {"min": 64, "max": 4096, "step": 8}
        return io.Schema(
            node_id="VideoCrafterEmptyLatent",
            display_name=cls.DISPLAY_NAME,
            category=VC_CATEGORY,
            description="An empty VideoCrafter latent: SD latents with the frames as the batch, [frames, 4, H/8, "
            "W/8].",
            inputs=[
                io.Int.Input("width", default=512, **size, tooltip="Pixels, a multiple of 8 (512 or 1024)."),
                io.Int.Input("height", default=320, **size, tooltip="Pixels, a multiple of 8 (320 or 576)."),
                io.Int.Input("frames", default=16, min=1, max=128, tooltip="Frames (trained: 16)."),
            ],
            outputs=[
                io.Latent.Output(
                    tooltip="A LATENT for VideoCrafter Sampler or KSampler; core VAE Decode gives its frames."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, width, height, frames):
        return cls.validation_answer(width=width, height=height, frames=frames)

    @classmethod
    def execute(cls, width, height, frames) -> io.NodeOutput:
        cls.check_inputs(width=width, height=height, frames=frames)
        if width % 8 or height % 8:
            raise CogVideoXNodeError(cls.DISPLAY_NAME, f"{width}x{height}: width and height must be multiples of 8")
        return io.NodeOutput({"samples": torch.zeros(frames, LATENT_CHANNELS, height // 8, width // 8)})


class VideoCrafterSampler(CheckedInputs):
    DISPLAY_NAME = "VideoCrafter Sampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VideoCrafterSampler",
            display_name=cls.DISPLAY_NAME,
            category=VC_CATEGORY,
            description="The reference sampler of VideoCrafter: DDIM over uniform steps with eta (1.0 in the "
            "reference scripts), classifier-free guidance and the model's use_scale rescaling, drawing its noise as "
            "the reference does. Core KSampler also runs these models (the schedule is in the MODEL) but its DDIM "
            "ends at sigma 0 and has no eta.",
            inputs=[
                io.Model.Input("model", tooltip="From VideoCrafter Checkpoint Loader."),
                io.Conditioning.Input("positive", tooltip="Prompt (and image tokens for I2V)."),
                io.Conditioning.Input("negative", tooltip="Negative; the reference uses the empty prompt."),
                io.Latent.Input("latent", tooltip="VideoCrafter Empty Latent: gives the size and frame count."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Noise seed."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps (reference: 50)."),
                io.Float.Input(
                    "cfg",
                    default=12.0,
                    min=1.0,
                    max=50.0,
                    step=0.1,
                    tooltip="Guidance scale (reference: 12 for T2V, 12 for I2V).",
                ),
                io.Float.Input(
                    "eta",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="DDIM eta: 1.0 as the reference scripts, 0.0 deterministic.",
                ),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent (frames as the batch), for core VAE Decode.")],
        )

    @classmethod
    def validate_inputs(cls, seed, steps, cfg, eta):
        return cls.validation_answer(seed=seed, steps=steps, cfg=cfg, eta=eta)

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, steps, cfg, eta) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(seed=seed, steps=steps, cfg=cfg, eta=eta)
        base = videocrafter_model(node, model)
        frames = video_latent(node, latent)
        cond, extra = positive[0]
        uncond = negative[0][0] if cfg != 1.0 else None
        base._check_context(cond, node)
        if uncond is not None:
            base._check_context(uncond, node)
        fps = int(extra.get("fps", base.variant.fps))
        mm.load_models_gpu([model])
        device = model.load_device
        dtype = base.manual_cast_dtype or base.get_dtype()  # the compute dtype
        unet = base.diffusion_model

        def network(x, t, context, fps_value):
            return VideoCrafterUNet.forward(unet, x.to(dtype), t, context, fps=fps_value, dtype=dtype)

        try:
            schedule = make_ddim_schedule(base.variant.schedule, steps, eta)
        except ValueError as e:
            raise CogVideoXNodeError(node, str(e)) from e
        generator = torch.Generator().manual_seed(seed)
        shape = (1, LATENT_CHANNELS, *frames.shape[:1], *frames.shape[2:])  # [1, 4, T, h, w]
        x = torch.randn(shape, generator=generator).to(device)  # x_T, as the reference draws it
        bar = comfy.utils.ProgressBar(len(schedule))

        def callback(i, x_i, x0):
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(i + 1, len(schedule))

        predict = guided_predictor(network, cond.to(device), None if uncond is None else uncond.to(device), cfg, fps)
        with torch.no_grad():
            out = sample_ddim(predict, x, schedule, noise_sampler=randn_noise(generator), callback=callback)
        samples = base.process_latent_out(rearrange(out.float().cpu(), "1 c t h w -> t c h w"))  # raw VAE space
        return io.NodeOutput({"samples": samples})
