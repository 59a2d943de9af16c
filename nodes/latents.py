"""Latent nodes: an empty video latent, image-to-video conditioning, video-to-video encode."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import torch

from ..cogvideox import conditioning
from ..cogvideox import frames as fr
from .common import CATEGORY, VAE_TYPE, CheckedInputs
from .vae import encode_video

log = logging.getLogger(__name__)

IMAGE_LATENT_KEY = "cogvideox_image_latent"
IMAGE_SCALING_KEY = "cogvideox_image_latent_scaling"

SIZE_TOOLTIP = "Pixels; a multiple of 16. 720x480 for CogVideoX 1.0, 1360x768 for 1.5."
MAX_BATCH = 64
FRAMES_TOOLTIP = "Video length in frames; 4k+1 (49 = 6 s at 8 fps for 1.0, 81 = 5 s at 16 fps for 1.5)."


def _size_inputs(frames_default: int = 49) -> dict:
    return {
        "width": ("INT", {"default": 720, "min": 16, "max": fr.MAX_SIDE, "step": 16, "tooltip": SIZE_TOOLTIP}),
        "height": ("INT", {"default": 480, "min": 16, "max": fr.MAX_SIDE, "step": 16, "tooltip": SIZE_TOOLTIP}),
        "frames": (
            "INT",
            {"default": frames_default, "min": 1, "max": fr.MAX_FRAMES, "step": 4, "tooltip": FRAMES_TOOLTIP},
        ),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": "Videos generated at once."}),
    }


def _size_problems(values: dict) -> list[str]:
    """The size rules of every latent node (values missing or None are not known yet)."""
    problems = fr.video_size_problems(values.get("width"), values.get("height"), values.get("frames"))
    batch_size = values.get("batch_size")
    if batch_size is None:
        pass
    elif batch_size < 1:
        problems.append(f"batch_size={batch_size} must be at least 1")
    elif batch_size > MAX_BATCH:
        # VALIDATE_INPUTS replaces ComfyUI's own min/max check, so the widget's max is enforced here.
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
    DESCRIPTION = "An empty video latent for text-to-video: [batch, 16, (frames-1)/4+1, height/8, width/8]."
    CATEGORY = f"{CATEGORY}/latent"
    FUNCTION = "execute"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("A LATENT {'samples': [B, 16, T, H/8, W/8]} for CogVideoX Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _size_inputs()}

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, frames, batch_size):
        return cls.validation_answer(width=width, height=height, frames=frames, batch_size=batch_size)

    def execute(self, width, height, frames, batch_size):
        self.check_inputs(width=width, height=height, frames=frames, batch_size=batch_size)
        return ({"samples": _empty(width, height, frames, batch_size)},)


class CogVideoXImageToVideo(_SizedNode):
    DISPLAY_NAME = "CogVideoX Image To Video"
    DESCRIPTION = (
        "Conditions an image-to-video model (5B-I2V, 1.5-5B-I2V) on a first frame: the image is resized, "
        "noise-augmented as in training, encoded with the VAE and carried on the conditioning; the latent "
        "to sample is returned with the right shape."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "execute"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = (
        "Positive conditioning carrying the image latent (also as core's concat_latent_image).",
        "Negative conditioning carrying the image latent (also as core's concat_latent_image).",
        "An empty LATENT of the requested size for CogVideoX Sampler or core KSampler on the core MODEL.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "From CogVideoX Text Encode."}),
                "negative": ("CONDITIONING", {"tooltip": "From CogVideoX Text Encode (may be an empty prompt)."}),
                "vae": (VAE_TYPE, {"tooltip": "The CogVideoX VAE that encodes the first frame."}),
                "image": ("IMAGE", {"tooltip": "The first frame; any size (the first image of a batch is used)."}),
                **_size_inputs(),
                "resize_mode": (
                    ["crop", "pad", "stretch"],
                    {
                        "default": "crop",
                        "tooltip": "crop: cover and cut the centre; pad: fit and letterbox; "
                        "stretch: ignore the aspect ratio.",
                    },
                ),
                "noise_aug_strength": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.005,
                        "tooltip": "Sigma of Gaussian noise added to the image before encoding (pixels in -1..1). "
                        "Small values (0.02-0.05) give more motion; 0 keeps the frame exact.",
                    },
                ),
                "noise_aug_mode": (
                    ["fixed", "auto"],
                    {
                        "default": "fixed",
                        "tooltip": "fixed: use noise_aug_strength; auto: draw sigma = exp(N(-3, 0.5)) "
                        "per video as CogVideoX's training did.",
                    },
                ),
                "image_latent_scaling": (
                    ["diffusers", "sat"],
                    {
                        "default": "diffusers",
                        "tooltip": "1.5 I2V only: diffusers feeds latent/0.7, the original SAT "
                        "code the raw latent (reported to follow the image more closely). 1.0 models ignore this.",
                    },
                ),
                "seed": (
                    "INT",
                    {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Seed of the noise augmentation."},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, frames, batch_size, noise_aug_strength, seed):
        return cls.validation_answer(
            width=width, height=height, frames=frames, batch_size=batch_size,
            noise_aug_strength=noise_aug_strength, seed=seed,
        )

    def execute(
        self,
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
    ):
        self.check_inputs(
            width=width, height=height, frames=frames, batch_size=batch_size,
            noise_aug_strength=noise_aug_strength, seed=seed,
        )
        first = fr.fit_images(image[:1], width, height, resize_mode)  # [1, height, width, C]
        pixels = fr.images_to_video(first)  # [1, 3, 1, H, W]
        generator = torch.Generator().manual_seed(seed)
        sigma = "auto" if noise_aug_mode == "auto" else noise_aug_strength
        pixels = conditioning.noise_augment(pixels, sigma, generator)
        latent = encode_video(self.DISPLAY_NAME, vae, pixels).repeat(batch_size, 1, 1, 1, 1)  # [B, 16, 1, h, w]
        # core's key (raw VAE space) for the core MODEL and core nodes, the pack's own for old graphs
        extra = {IMAGE_LATENT_KEY: latent, IMAGE_SCALING_KEY: image_latent_scaling, "concat_latent_image": latent}
        positive = [[c, {**d, **extra}] for c, d in positive]
        negative = [[c, {**d, **extra}] for c, d in negative]
        return (positive, negative, {"samples": _empty(width, height, frames, batch_size)})


class CogVideoXVideoToVideo(_SizedNode):
    DISPLAY_NAME = "CogVideoX Video To Video"
    DESCRIPTION = (
        "Encodes a video (an IMAGE batch of frames, e.g. from a video loader) to a LATENT for CogVideoX Sampler "
        "with denoise < 1. Frames are resized to the target size and cut to the largest 4k+1 count."
    )
    CATEGORY = f"{CATEGORY}/latent"
    FUNCTION = "execute"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The encoded video; sample it with denoise 0.5-0.8.",)

    @classmethod
    def INPUT_TYPES(cls):
        sizes = _size_inputs()
        return {
            "required": {
                "vae": (VAE_TYPE, {"tooltip": "The CogVideoX VAE."}),
                "images": ("IMAGE", {"tooltip": "The frames of the source video."}),
                "width": sizes["width"],
                "height": sizes["height"],
                "resize_mode": (
                    ["crop", "pad", "stretch"],
                    {"default": "crop", "tooltip": "How frames of another aspect ratio are fitted."},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return cls.validation_answer(width=width, height=height)

    def execute(self, vae, images, width, height, resize_mode):
        self.check_inputs(width=width, height=height)
        videos = fr.split_videos(images)  # one, or the batch CogVideoX VAE Decode made
        n = videos[0].shape[0]
        usable = (n - 1) // fr.TEMPORAL_COMPRESSION * fr.TEMPORAL_COMPRESSION + 1
        if usable != n:
            log.warning("%s: %d frames is not 4k+1; using the first %d", self.DISPLAY_NAME, n, usable)
        fitted = [fr.fit_images(v[:usable], width, height, resize_mode) for v in videos]
        pixels = torch.cat([fr.images_to_video(v) for v in fitted])  # [B, 3, F, H, W]
        latent = encode_video(self.DISPLAY_NAME, vae, pixels)
        return ({"samples": latent},)
