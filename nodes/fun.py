"""CogVideoX-Fun conditioning: inpainting (start/end frames, masked video) and control videos.

Both nodes carry the Fun channels on the conditioning under core's keys (``concat_latent_image``,
raw VAE latent; ``concat_mask``, latent grid, 1 = to generate) and mark it with ``cogvideox_fun``
(the kind) so CogVideoX Sampler can tell Fun conditioning from image-to-video conditioning and
say what is wrong when they are mixed up. Layouts: docs/cogvideox_fun.md.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..cogvideox import conditioning
from ..cogvideox import frames as fr
from ..cogvideox.configs import FUN_CONTROL, FUN_INPAINT
from .common import CATEGORY, CogVideoXNodeError, VAEType
from .latents import _empty, _resize_input, _size_inputs, _SizedNode
from .vae import encode_video

log = logging.getLogger(__name__)

FUN_KIND_KEY = "cogvideox_fun"
CONCAT_LATENT_KEY = "concat_latent_image"
CONCAT_MASK_KEY = "concat_mask"
RESIZE_MODES = ("crop", "pad", "stretch", "none")
RESIZE_TOOLTIP = (
    "How inputs of another size are fitted to width x height. crop: cover and cut the centre; pad: fit and "
    "letterbox; stretch: ignore the aspect ratio; none: they must already be width x height (else an error)."
)


def _with(conditioning_in, extra: dict) -> list:
    return [[c, {**d, **extra}] for c, d in conditioning_in]


def _fit(node: str, images: torch.Tensor, what: str, width: int, height: int, mode: str) -> torch.Tensor:
    """An IMAGE batch (or a MASK batch as [N, H, W, 1]) at width x height."""
    h, w = images.shape[1:3]
    if mode == "none":
        if (w, h) != (width, height):
            raise CogVideoXNodeError(
                node,
                f"the {what} is {w}x{h} but the video is {width}x{height} (width x height) and resize_mode is "
                f"'none'. Set width/height to {w}x{h} (multiples of 16), resize the {what} first, or pick "
                "resize_mode crop, pad or stretch.",
            )
        return images
    return fr.fit_images(images, width, height, mode)


def _bucket(width: int, height: int, *images) -> tuple[int, int]:
    """The Fun training bucket nearest to the first given image's aspect ratio (else the requested size)."""
    for image in images:
        if image is not None:
            return fr.nearest_fun_bucket(image.shape[2], image.shape[1], (width * height) ** 0.5)
    return fr.nearest_fun_bucket(width, height, (width * height) ** 0.5)


def _common_inputs() -> list[io.Input]:
    return [
        io.Conditioning.Input("positive", tooltip="From CogVideoX Text Encode."),
        io.Conditioning.Input("negative", tooltip="From CogVideoX Text Encode (may be an empty prompt)."),
        VAEType.Input("vae", tooltip="The CogVideoX VAE (the same for every variant)."),
        *_size_inputs(),
        _resize_input(RESIZE_TOOLTIP, RESIZE_MODES),
    ]


class CogVideoXFunInpaintConditioning(_SizedNode):
    DISPLAY_NAME = "CogVideoX Fun Inpaint Conditioning"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXFunInpaintConditioning",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/conditioning",
            description="Conditions a CogVideoX-Fun InP model: a start frame, an end frame (first-to-last-frame), or "
            "a video with a mask (1 = generate) to fill in. Builds the masked video (unknown pixels at -1), encodes "
            "it with the VAE and puts the mask on the latent grid as VideoX-Fun does. With no image, video or mask "
            "it is text-to-video for the InP model.",
            inputs=[
                *_common_inputs(),
                io.Float.Input(
                    "noise_aug_strength",
                    default=0.0563,
                    min=0.0,
                    max=1.0,
                    step=0.0001,
                    tooltip="Sigma of Gaussian noise added to the known pixels before encoding. VideoX-Fun "
                    "adds 0.0563 for models whose config sets add_noise_in_inpaint_model; 0 keeps them exact.",
                ),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of the pixel noise."),
                io.Image.Input(
                    "start_image", optional=True, tooltip="The first frame(s) of the video (a batch = several frames)."
                ),
                io.Image.Input("end_image", optional=True, tooltip="The last frame(s) of the video."),
                io.Image.Input(
                    "video", optional=True, tooltip="A video (IMAGE batch of frames) to inpaint; needs mask."
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Where to generate (1) and where to keep the video (0): one mask per frame, "
                    "or a single mask for every frame.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="positive",
                    tooltip="Positive conditioning carrying the mask and the masked-video latent.",
                ),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning carrying the same."),
                io.Latent.Output(
                    display_name="latent", tooltip="An empty LATENT of the requested size for CogVideoX Sampler."
                ),
                io.Int.Output(
                    display_name="bucket_width",
                    tooltip="Width of the Fun training bucket nearest to the input's aspect ratio (at about this "
                    "area); InP models give their best results at bucket sizes.",
                ),
                io.Int.Output(display_name="bucket_height", tooltip="Height of that bucket."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width, height, frames, batch_size, resize_mode, noise_aug_strength, seed):
        return cls.validation_answer(
            width=width, height=height, frames=frames, batch_size=batch_size, resize_mode=resize_mode,
            noise_aug_strength=noise_aug_strength, seed=seed,
        )

    @classmethod
    def _video_and_mask(cls, width, height, frames, resize_mode, start_image, end_image, video, mask):
        """Pixels [1, 3, F, H, W] in -1..1 and the pixel mask [1, 1, F, H, W] (1 = unknown), or (None, None)."""
        node = cls.DISPLAY_NAME
        if (video is None) != (mask is None):
            raise CogVideoXNodeError(
                node,
                "video and mask go together: connect both (the mask says which pixels to generate), "
                "or neither (start_image / end_image alone).",
            )
        if video is not None and (start_image is not None or end_image is not None):
            raise CogVideoXNodeError(
                node,
                "connect either start_image / end_image or video + mask, not both "
                "(paste the frames into the video and mask them as known instead).",
            )
        if video is not None:
            n = video.shape[0]
            if mask.ndim == 2:
                mask = mask[None]
            if mask.shape[0] not in (1, n):
                raise CogVideoXNodeError(
                    node,
                    f"the mask has {mask.shape[0]} frames but the video has {n}; give one mask per video frame "
                    "or a single mask for all of them.",
                )
            if n < frames:
                log.info("%s: the video has %d frames, %d asked: the rest is generated", node, n, frames)
            elif n > frames:
                log.info("%s: the video has %d frames; using the first %d", node, n, frames)
            used = min(n, frames)
            pixels = _fit(node, video[:used, ..., :3], "video", width, height, resize_mode)
            m = mask.expand(n, -1, -1)[:used, ..., None].float()  # [F, H, W, 1]
            m = _fit(node, m, "mask", width, height, "stretch" if resize_mode != "none" else "none")
            out = torch.full((1, 3, frames, height, width), -1.0)
            out[:, :, :used] = fr.images_to_video(pixels)
            pm = torch.ones(1, 1, frames, height, width)
            pm[:, :, :used] = m[..., 0][None, None]
            return out, pm
        start = end = None
        if start_image is not None:
            start = fr.images_to_video(_fit(node, start_image[..., :3], "start_image", width, height, resize_mode))
        if end_image is not None:
            end = fr.images_to_video(_fit(node, end_image[..., :3], "end_image", width, height, resize_mode))
        if start is None and end is None:
            return None, None
        return conditioning.start_end_video(start, end, frames)

    @classmethod
    def execute(
        cls,
        positive,
        negative,
        vae,
        width,
        height,
        frames,
        batch_size,
        resize_mode,
        noise_aug_strength,
        seed,
        start_image=None,
        end_image=None,
        video=None,
        mask=None,
    ) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(
            width=width, height=height, frames=frames, batch_size=batch_size, resize_mode=resize_mode,
            noise_aug_strength=noise_aug_strength, seed=seed,
        )
        empty = _empty(width, height, frames, batch_size)  # [B, 16, T, h, w]
        t, h, w = empty.shape[2:]
        pixels, pmask = cls._video_and_mask(width, height, frames, resize_mode, start_image, end_image, video, mask)
        if pixels is None or bool((pmask >= 0.5).all()):  # nothing known: text-to-video (the reference's zeros)
            latent = torch.zeros(1, 16, t, h, w)
            latent_mask = torch.ones(1, 1, t, h, w)
        else:
            masked = conditioning.masked_video(pixels, pmask)
            generator = torch.Generator().manual_seed(seed)
            masked = conditioning.noise_augment_known(masked, noise_aug_strength, generator)
            latent = encode_video(node, vae, masked)  # [1, 16, T, h, w] raw
            latent_mask = conditioning.inpaint_mask_latent(pmask, t, h, w)  # [1, 1, T, h, w], 1 = unknown
        device = empty.device
        extra = {
            FUN_KIND_KEY: FUN_INPAINT,
            CONCAT_LATENT_KEY: latent.to(device).repeat(batch_size, 1, 1, 1, 1),
            CONCAT_MASK_KEY: latent_mask.to(device).repeat(batch_size, 1, 1, 1, 1),
        }
        bw, bh = _bucket(width, height, start_image, end_image, video)
        return io.NodeOutput(_with(positive, extra), _with(negative, extra), {"samples": empty}, bw, bh)


class CogVideoXFunControlConditioning(_SizedNode):
    DISPLAY_NAME = "CogVideoX Fun Control Conditioning"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXFunControlConditioning",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/conditioning",
            description="Conditions a CogVideoX-Fun Control model (canny, depth, pose, MLSD) on a control video: the "
            "frames (e.g. from core Canny or a pose estimator) are resized, encoded with the VAE and carried on the "
            "conditioning.",
            inputs=[
                *_common_inputs(),
                io.Image.Input(
                    "control_video",
                    tooltip="The control frames (an IMAGE batch); at least `frames` of them, extra ones "
                    "are cut, a shorter video repeats its last frame.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="positive", tooltip="Positive conditioning carrying the control latent."
                ),
                io.Conditioning.Output(
                    display_name="negative", tooltip="Negative conditioning carrying the control latent."
                ),
                io.Latent.Output(
                    display_name="latent", tooltip="An empty LATENT of the requested size for CogVideoX Sampler."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, width, height, frames, batch_size, resize_mode):
        return cls.validation_answer(
            width=width, height=height, frames=frames, batch_size=batch_size, resize_mode=resize_mode
        )

    @classmethod
    def execute(
        cls, positive, negative, vae, width, height, frames, batch_size, resize_mode, control_video
    ) -> io.NodeOutput:
        node = cls.DISPLAY_NAME
        cls.check_inputs(width=width, height=height, frames=frames, batch_size=batch_size, resize_mode=resize_mode)
        n = control_video.shape[0]
        if n < frames:
            log.warning("%s: the control video has %d frames, %d asked: repeating its last frame", node, n, frames)
            control_video = torch.cat([control_video, control_video[-1:].expand(frames - n, -1, -1, -1)])
        fitted = _fit(node, control_video[:frames, ..., :3], "control_video", width, height, resize_mode)
        latent = encode_video(node, vae, fr.images_to_video(fitted))  # [1, 16, T, h, w] raw, the VAE's mean
        empty = _empty(width, height, frames, batch_size)
        extra = {FUN_KIND_KEY: FUN_CONTROL, CONCAT_LATENT_KEY: latent.to(empty.device).repeat(batch_size, 1, 1, 1, 1)}
        return io.NodeOutput(_with(positive, extra), _with(negative, extra), {"samples": empty})
