"""Latent nodes: an empty video latent, image-to-video conditioning, video-to-video encode."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..cogvideox import conditioning
from ..cogvideox import frames as fr
from .common import CATEGORY, CheckedInputs, VAEType
from .vae import encode_video

log = logging.getLogger(__name__)

IMAGE_LATENT_KEY = "cogvideox_image_latent"
IMAGE_SCALING_KEY = "cogvideox_image_latent_scaling"

SIZE_TOOLTIP = "Pixels; a multiple of 16. 720x480 for CogVideoX 1.0, 1360x768 for 1.5."
MAX_BATCH = 64
FRAMES_TOOLTIP = "Video length in frames; 4k+1 (49 = 6 s at 8 fps for 1.0, 81 = 5 s at 16 fps for 1.5)."


def _size_inputs(frames_default: int = 49) -> list[io.Input]:
    """width, height, frames, batch_size (in this order)."""
    return [
        io.Int.Input("width", default=720, min=16, max=fr.MAX_SIDE, step=16, tooltip=SIZE_TOOLTIP),
        io.Int.Input("height", default=480, min=16, max=fr.MAX_SIDE, step=16, tooltip=SIZE_TOOLTIP),
        io.Int.Input("frames", default=frames_default, min=1, max=fr.MAX_FRAMES, step=4, tooltip=FRAMES_TOOLTIP),
        io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, tooltip="Videos generated at once."),
    ]


def _resize_input(tooltip: str, modes: tuple[str, ...] = ("crop", "pad", "stretch")) -> io.Combo.Input:
    return io.Combo.Input("resize_mode", options=list(modes), default="crop", tooltip=tooltip)


def _size_problems(values: dict) -> list[str]:
    """The size rules of every latent node (values missing or None are not known yet)."""
    problems = fr.video_size_problems(values.get("width"), values.get("height"), values.get("frames"))
    batch_size = values.get("batch_size")
    if batch_size is None:
        pass
    elif batch_size < 1:
        problems.append(f"batch_size={batch_size} must be at least 1")
    elif batch_size > MAX_BATCH:
        # validate_inputs replaces ComfyUI's own min/max check, so the widget's max is enforced here.
        problems.append(f"batch_size={batch_size} is too large; use at most {MAX_BATCH} (queue more prompts instead)")
    return problems


class _SizedNode(CheckedInputs):
    CUSTOM_CHECKED = ("width", "height", "frames", "batch_size")

    @classmethod
    def input_problems(cls, values: dict) -> list[str]:
        return _size_problems(values) + super().input_problems(values)


def _empty(width: int, height: int, frames_: int, batch_size: int) -> torch.Tensor:
    t = fr.latent_frames(frames_)
    h, w = height // fr.SPATIAL_COMPRESSION, width // fr.SPATIAL_COMPRESSION
    return torch.zeros(batch_size, 16, t, h, w, device=mm.intermediate_device())  # [B, 16, T, h, w]


class CogVideoXEmptyLatent(_SizedNode):
    DISPLAY_NAME = "CogVideoX Empty Latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXEmptyLatent",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/latent",
            description="An empty video latent for text-to-video: [batch, 16, (frames-1)/4+1, height/8, width/8].",
            inputs=_size_inputs(),
            outputs=[io.Latent.Output(tooltip="A LATENT {'samples': [B, 16, T, H/8, W/8]} for CogVideoX Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, width, height, frames, batch_size):
        return cls.validation_answer(width=width, height=height, frames=frames, batch_size=batch_size)

    @classmethod
    def execute(cls, width, height, frames, batch_size) -> io.NodeOutput:
        cls.check_inputs(width=width, height=height, frames=frames, batch_size=batch_size)
        return io.NodeOutput({"samples": _empty(width, height, frames, batch_size)})


class CogVideoXImageToVideo(_SizedNode):
    DISPLAY_NAME = "CogVideoX Image To Video"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXImageToVideo",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/conditioning",
            description="Conditions an image-to-video model (5B-I2V, 1.5-5B-I2V) on a first frame: the image is "
            "resized, noise-augmented as in training, encoded with the VAE and carried on the conditioning; the "
            "latent to sample is returned with the right shape.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="From CogVideoX Text Encode."),
                io.Conditioning.Input("negative", tooltip="From CogVideoX Text Encode (may be an empty prompt)."),
                VAEType.Input("vae", tooltip="The CogVideoX VAE that encodes the first frame."),
                io.Image.Input("image", tooltip="The first frame; any size (the first image of a batch is used)."),
                *_size_inputs(),
                _resize_input("crop: cover and cut the centre; pad: fit and letterbox; "
                              "stretch: ignore the aspect ratio."),
                io.Float.Input(
                    "noise_aug_strength",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.005,
                    tooltip="Sigma of Gaussian noise added to the image before encoding (pixels in -1..1). "
                    "Small values (0.02-0.05) give more motion; 0 keeps the frame exact.",
                ),
                io.Combo.Input(
                    "noise_aug_mode",
                    options=["fixed", "auto"],
                    default="fixed",
                    tooltip="fixed: use noise_aug_strength; auto: draw sigma = exp(N(-3, 0.5)) "
                    "per video as CogVideoX's training did.",
                ),
                io.Combo.Input(
                    "image_latent_scaling",
                    options=["diffusers", "sat"],
                    default="diffusers",
                    tooltip="1.5 I2V only: diffusers feeds latent/0.7, the original SAT "
                    "code the raw latent (reported to follow the image more closely). 1.0 models ignore this.",
                ),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of the noise augmentation."
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="positive",
                    tooltip="Positive conditioning carrying the image latent (also as core's concat_latent_image).",
                ),
                io.Conditioning.Output(
                    display_name="negative",
                    tooltip="Negative conditioning carrying the image latent (also as core's concat_latent_image).",
                ),
                io.Latent.Output(
                    display_name="latent",
                    tooltip="An empty LATENT of the requested size for CogVideoX Sampler or core KSampler on the "
                    "core MODEL.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls, width, height, frames, batch_size, resize_mode, noise_aug_strength, noise_aug_mode, image_latent_scaling,
        seed,
    ):
        return cls.validation_answer(
            width=width, height=height, frames=frames, batch_size=batch_size, resize_mode=resize_mode,
            noise_aug_strength=noise_aug_strength, noise_aug_mode=noise_aug_mode,
            image_latent_scaling=image_latent_scaling, seed=seed,
        )

    @classmethod
    def execute(
        cls,
        positive,
        negative,
        vae,
        image,
        width,
        height,
        frames,
        batch_size,
        resize_mode,
        noise_aug_strength,
        noise_aug_mode,
        image_latent_scaling,
        seed,
    ) -> io.NodeOutput:
        cls.check_inputs(
            width=width, height=height, frames=frames, batch_size=batch_size, resize_mode=resize_mode,
            noise_aug_strength=noise_aug_strength, noise_aug_mode=noise_aug_mode,
            image_latent_scaling=image_latent_scaling, seed=seed,
        )
        first = fr.fit_images(image[:1], width, height, resize_mode)  # [1, height, width, C]
        pixels = fr.images_to_video(first)  # [1, 3, 1, H, W]
        generator = torch.Generator().manual_seed(seed)
        sigma = "auto" if noise_aug_mode == "auto" else noise_aug_strength
        pixels = conditioning.noise_augment(pixels, sigma, generator)
        latent = encode_video(cls.DISPLAY_NAME, vae, pixels).repeat(batch_size, 1, 1, 1, 1)  # [B, 16, 1, h, w]
        # core's key (raw VAE space) for the core MODEL and core nodes, the pack's own for old graphs
        extra = {IMAGE_LATENT_KEY: latent, IMAGE_SCALING_KEY: image_latent_scaling, "concat_latent_image": latent}
        positive = [[c, {**d, **extra}] for c, d in positive]
        negative = [[c, {**d, **extra}] for c, d in negative]
        return io.NodeOutput(positive, negative, {"samples": _empty(width, height, frames, batch_size)})


class CogVideoXVideoToVideo(_SizedNode):
    DISPLAY_NAME = "CogVideoX Video To Video"

    @classmethod
    def define_schema(cls) -> io.Schema:
        width, height = _size_inputs()[:2]
        return io.Schema(
            node_id="CogVideoXVideoToVideo",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/latent",
            description="Encodes a video (an IMAGE batch of frames, e.g. from a video loader) to a LATENT for "
            "CogVideoX Sampler with denoise < 1. Frames are resized to the target size and cut to the largest 4k+1 "
            "count.",
            inputs=[
                VAEType.Input("vae", tooltip="The CogVideoX VAE."),
                io.Image.Input("images", tooltip="The frames of the source video."),
                width,
                height,
                _resize_input("How frames of another aspect ratio are fitted."),
            ],
            outputs=[io.Latent.Output(tooltip="The encoded video; sample it with denoise 0.5-0.8.")],
        )

    @classmethod
    def validate_inputs(cls, width, height, resize_mode):
        return cls.validation_answer(width=width, height=height, resize_mode=resize_mode)

    @classmethod
    def execute(cls, vae, images, width, height, resize_mode) -> io.NodeOutput:
        cls.check_inputs(width=width, height=height, resize_mode=resize_mode)
        videos = fr.split_videos(images)  # one, or the batch CogVideoX VAE Decode made
        n = videos[0].shape[0]
        usable = (n - 1) // fr.TEMPORAL_COMPRESSION * fr.TEMPORAL_COMPRESSION + 1
        if usable != n:
            log.warning("%s: %d frames is not 4k+1; using the first %d", cls.DISPLAY_NAME, n, usable)
        fitted = [fr.fit_images(v[:usable], width, height, resize_mode) for v in videos]
        pixels = torch.cat([fr.images_to_video(v) for v in fitted])  # [B, 3, F, H, W]
        latent = encode_video(cls.DISPLAY_NAME, vae, pixels)
        return io.NodeOutput({"samples": latent})
