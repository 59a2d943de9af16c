"""CogVideoX as a core ComfyUI ``MODEL``: a ``comfy.model_base.BaseModel`` around the library transformer.

ComfyUI's own video models are a ``BaseModel`` (the network as ``diffusion_model``, a
``model_sampling`` that maps noise levels to timesteps, a ``latent_format`` that scales latents in
and out) plus a ``supported_models`` config; this file is the same split for CogVideoX, so core
KSampler / SamplerCustomAdvanced with every sampler and scheduler, the guiders, model patches,
core LoRA loaders and the core context-window nodes reach the network. The numbers come from the
library (``cogvideox.schedules`` for the noise levels, ``cogvideox.pipeline`` for the image
latent scaling and the 1.5 frame padding), never re-derived here.

Conventions (core's): a LATENT holds raw VAE latents ``[B, 16, T, h, w]``; the sampler works on
``latent * scaling_factor`` (``latent_format.process_in``) in variance-exploding form
``x = x0 + sigma * eps``; ``apply_model(x, sigma)`` returns the denoised ``x0``.
"""

from __future__ import annotations

import logging

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_sampling
import comfy.patcher_extension
import comfy.supported_models_base
import comfy.utils
import torch

from ..cogvideox import frames as fr
from ..cogvideox import schedules
from ..cogvideox.conditioning import fun_condition, i2v_condition
from ..cogvideox.configs import SchedulerConfig, Variant
from ..cogvideox.pipeline import pad_front, scale_image_latent
from .common import CogVideoXNodeError
from .fun import CONCAT_MASK_KEY, FUN_KIND_KEY
from .latents import IMAGE_LATENT_KEY as PACK_IMAGE_KEY
from .latents import IMAGE_SCALING_KEY as PACK_SCALING_KEY

log = logging.getLogger(__name__)

LATENT_CHANNELS = 16
# The last training step has zero SNR (alpha = 0, sigma = inf), which no sigma-space sampler can
# start from. Core's zero-terminal-SNR models (comfy.model_sampling.rescale_zero_terminal_snr_sigmas)
# put alpha = 4.897e-8 there (sigma ~ 4519); we use the same, so x0 at that step differs from the
# reference's by sqrt(alpha) * x ~ 2.2e-4 * x and every other step is the reference's.
TERMINAL_ALPHA = 4.8973451890853435e-08
MODEL_NAME = "CogVideoX MODEL (from CogVideoX Model Loader)"
SAMPLER_NODES = "KSampler / SamplerCustomAdvanced"
WINDOW_NODE = "ContextWindowsManual"
FRAME_DIM = 2  # [B, C, T, h, w]


class CogVideoXCoreError(CogVideoXNodeError):
    """A problem with what a core node gave the CogVideoX MODEL: the node, what and the fix."""

    def __init__(self, message: str, node: str = SAMPLER_NODES):
        super().__init__(f"{node} on the {MODEL_NAME}", message)


class UNetSettingError(CogVideoXCoreError, KeyError):
    """A core node asked the model's config for a UNet setting (FreeU's ``model_channels``, ...)."""

    __str__ = ValueError.__str__  # the message as it is (KeyError's would quote it)


class _UNetConfig(dict):
    """The core config's ``unet_config``: a missing setting is a clear error, not a bare KeyError.

    Core nodes made for UNets read UNet settings from it when they run (FreeU / FreeU_V2:
    ``model_channels``); CogVideoX is a transformer and has none of them.
    """

    def __missing__(self, key):
        raise UNetSettingError(
            f"it read the UNet setting {key!r} of the model, which CogVideoX (a transformer, not a UNet) does "
            "not have: that node works on UNet models only (FreeU, FreeU_V2 and the like). Remove it between "
            "the loader's core_model output and the sampler.",
            "a core UNet node (FreeU / FreeU_V2)",
        )


class CogVideoXLatentFormat(comfy.latent_formats.LatentFormat):
    """16-channel 3D latents, scaled by the variant's factor (0.7, or 1.15258426 for 2B).

    ``rgb_projection`` (``[17, 3]`` on raw latents, bias last: ``Variant.latent_rgb``, the layout of
    ``cogvideox.preview.fit_rgb_projection``) becomes core's latent-to-RGB preview factors. Core's
    Latent2RGBPreviewer applies them to the sampler's x0, which is the SCALED latent
    (``process_in``), so the rows are divided by the scale here; the bias is unchanged.
    """

    latent_channels = LATENT_CHANNELS
    latent_dimensions = 3

    def __init__(self, scale_factor: float = 1.0, rgb_projection: torch.Tensor | None = None):
        self.scale_factor = float(scale_factor)
        if rgb_projection is not None:
            projection = torch.as_tensor(rgb_projection, dtype=torch.float32)  # [C+1, 3], bias last
            self.latent_rgb_factors = (projection[:LATENT_CHANNELS] / self.scale_factor).tolist()
            self.latent_rgb_factors_bias = projection[LATENT_CHANNELS].tolist()


class CogVideoXModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """The discrete noise levels CogVideoX was trained on, for core samplers (v-prediction).

    Scaled-linear betas, the variant's SNR shift and zero terminal SNR, from
    ``cogvideox.schedules.alphas_cumprod``; ``sigmas[t] = sqrt((1 - a_t) / a_t)``, with the
    terminal step's alpha raised to ``TERMINAL_ALPHA`` (see there).
    """

    def __init__(self, config: SchedulerConfig):
        torch.nn.Module.__init__(self)
        self.sigma_data = 1.0
        table = schedules.alphas_cumprod(config)  # [T] float64
        self.num_timesteps = int(table.numel())
        self.linear_start, self.linear_end = config.beta_start, config.beta_end
        self.zsnr = bool(config.rescale_betas_zero_snr)
        self.set_sigmas(schedules.to_sigmas(table.clamp_min(TERMINAL_ALPHA)))


class CogVideoXCoreConfig(comfy.supported_models_base.BASE):
    """The ``supported_models`` side: no state-dict detection (the pack's loader does that)."""

    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = CogVideoXLatentFormat
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def __init__(self, variant: Variant, rgb_projection: torch.Tensor | None = None):
        super().__init__(dict(self.unet_config))
        self.unet_config = _UNetConfig(self.unet_config)
        self.latent_format = CogVideoXLatentFormat(variant.scaling_factor, rgb_projection)


class CogVideoXCoreModel(comfy.model_base.BaseModel):
    """A core ``BaseModel`` whose ``diffusion_model`` is ``cogvideox.transformer.CogVideoXTransformer``.

    ``apply_model(x, sigma, c_concat, c_crossattn)``: ``x`` is the scaled VE latent
    ``[B, 16, T, h, w]``; text embeddings come from the conditioning (``cross_attn``), an
    image-to-video latent from ``concat_latent_image`` (``concat_cond``). 1.5's ``ofs`` and the
    ``patch_size_t`` frame padding (a copy of the first frame in front, dropped from the output)
    happen here, so samplers see exactly the latent they were given.
    """

    def __init__(self, transformer: torch.nn.Module, variant: Variant, device=None, rgb_projection=None):
        if rgb_projection is None:
            rgb_projection = variant.latent_rgb  # the VAE's preview projection, when one is known
        super().__init__(
            CogVideoXCoreConfig(variant, rgb_projection), comfy.model_base.ModelType.V_PREDICTION, device=device
        )
        self.diffusion_model = transformer
        self.variant = variant
        self.model_sampling = CogVideoXModelSampling(variant.scheduler_config())

    # ------------------------------------------------------------------ dtype
    def get_dtype(self) -> torch.dtype:
        """The dtype the network computes in: its first parameter's, as the pack's sampler uses."""
        param = next(self.diffusion_model.parameters(), None)
        return param.dtype if param is not None else torch.float32

    # ------------------------------------------------------------- conditions
    def extra_conds(self, **kwargs) -> dict:
        out = {}
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            # CONDRegular, not CONDCrossAttn: repeating text tokens to batch prompts of different
            # lengths would change CogVideoX's joint attention (text tokens are keys of the video).
            out["c_crossattn"] = comfy.conds.CONDRegular(cross_attn)
        concat = self.concat_cond(**kwargs)
        if concat is not None:
            out["c_concat"] = comfy.conds.CONDNoiseShape(concat)
        return out

    def concat_cond(self, **kwargs) -> torch.Tensor | None:
        """Channels concatenated to the latent ``[B, extra, T, h, w]`` in model space, or None.

        Image-to-video: the raw latent from ``concat_latent_image`` (or the pack's own key),
        scaled as the reference pipeline does, its frames first and zeros after (the reference
        zero-pads the first-frame latent). Fun InP / Control models (mask + masked video, control
        video) extend this method.
        """
        noise = kwargs["noise"]
        if self.variant.fun is not None:
            return self.fun_concat(noise, kwargs)
        extra = self.diffusion_model.config.in_channels - noise.shape[1]
        image = kwargs.get("concat_latent_image", kwargs.get(PACK_IMAGE_KEY))
        if extra <= 0:
            if image is not None:
                log.info("%s is text-to-video (%s); the conditioning's image latent is not used", MODEL_NAME,
                         self.variant.name)
            return None
        if image is None:
            raise CogVideoXCoreError(
                f"the model is image-to-video ({self.variant.name}) but the conditioning carries no image latent. "
                "Put CogVideoX Image To Video (or a core node that sets concat_latent_image) between the text "
                "encoders and the sampler, or load a text-to-video model."
            )
        if image.ndim != 5 or image.shape[1] != LATENT_CHANNELS or image.shape[-2:] != noise.shape[-2:]:
            raise CogVideoXCoreError(
                f"the image latent has shape {tuple(image.shape)} but the latent to sample is {tuple(noise.shape)}; "
                "encode the image with the CogVideoX VAE at the video's width and height."
            )
        if extra != image.shape[1]:
            raise CogVideoXCoreError(
                f"the model takes {extra} extra input channels, the image latent has {image.shape[1]}; "
                "this is not a plain image-to-video model."
            )
        mode = kwargs.get(PACK_SCALING_KEY, "diffusers")
        scaled = scale_image_latent(image.to(kwargs["device"], torch.float32), self.variant, mode)
        scaled = i2v_condition(scaled[:, :, : noise.shape[2]], noise.shape[2])  # [B', 16, T, h, w]
        return comfy.utils.resize_to_batch_size(scaled, noise.shape[0])

    def fun_concat(self, noise: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """CogVideoX-Fun: the mask and masked-video latent (InP) or the control latent (Control) of
        CogVideoX Fun Inpaint / Control Conditioning (``concat_latent_image`` raw, ``concat_mask`` on
        the latent grid, 1 = generate), scaled like the pack's sampler does (``fun_condition``)."""
        fun = self.variant.fun
        node = f"CogVideoX Fun {'Inpaint' if fun == 'inpaint' else 'Control'} Conditioning"
        if kwargs.get(FUN_KIND_KEY) != fun:
            raise CogVideoXCoreError(
                f"the model is CogVideoX-Fun {fun} ({self.variant.name}) and needs its conditioning; put {node} "
                "between the text encoders and the sampler (Image To Video conditioning does not fit it)."
            )
        latent, mask = kwargs.get("concat_latent_image"), kwargs.get(CONCAT_MASK_KEY)
        for name, t in (("latent", latent), ("mask", mask)):
            if t is not None and (t.ndim != 5 or t.shape[2:] != noise.shape[2:]):
                raise CogVideoXCoreError(
                    f"the Fun {name} has shape {tuple(t.shape)} but the latent to sample is {tuple(noise.shape)}; "
                    f"make both with the same width, height and frames in {node}."
                )
        device = kwargs["device"]
        latent = None if latent is None else latent.to(device, torch.float32)
        mask = None if mask is None else mask.to(device, torch.float32)
        try:
            cond = fun_condition(fun, self.variant.scaling_factor, latent, mask)  # [B', 17 or 16, T, h, w]
        except ValueError as e:
            raise CogVideoXCoreError(f"{e}; make the conditioning with {node}.") from e
        return comfy.utils.resize_to_batch_size(cond, noise.shape[0])

    def pad_concat(self, concat: torch.Tensor, pad: int) -> torch.Tensor:
        """The concat for ``pad`` frames put in front of the latent: the reference pads the image
        latent to the padded length with zeros, so the image stays at padded frame 0; Fun
        conditioning is front-padded like the latent itself (the pack's sampler does the same)."""
        if not pad:
            return concat
        if self.variant.fun is not None:
            return pad_front(concat, pad)  # [B, C, T + pad, h, w]
        zeros = concat.new_zeros(*concat.shape[:2], pad, *concat.shape[3:])
        return torch.cat([concat, zeros], dim=2)  # [B, C, T + pad, h, w]

    @staticmethod
    def window_concat(concat: torch.Tensor, frames: int, transformer_options: dict) -> torch.Tensor:
        """The concat frames of the current core context window (a full-length concat otherwise)."""
        if concat.shape[2] == frames:
            return concat
        window = transformer_options.get("context_window")
        if window is not None and getattr(window, "dim", None) == 2 and len(window.index_list) == frames:
            return concat[:, :, window.index_list]
        raise CogVideoXCoreError(
            f"the image latent covers {concat.shape[2]} frames, the latent given to the model {frames}; "
            "context windows must run on the frame axis (dim 2)."
        )

    # ----------------------------------------------------------------- checks
    @staticmethod
    def check_latent(shape: tuple[int, ...]) -> None:
        if len(shape) != 5 or shape[1] != LATENT_CHANNELS:
            raise CogVideoXCoreError(
                f"the latent has shape {tuple(shape)}; CogVideoX samples video latents "
                "[batch, 16, frames, height/8, width/8]. Use CogVideoX Empty Latent (or CogVideoX Image To Video / "
                "Video To Video), not an image latent of another model."
            )

    def check_sampling(self, shape: tuple[int, ...], context_handler=None) -> None:
        """Before a core sampler starts: the latent, the context windows and the learned positions."""
        self.check_latent(shape)
        frames = shape[FRAME_DIM]
        length = frames
        if context_handler is not None:
            dim, window = getattr(context_handler, "dim", None), getattr(context_handler, "context_length", None)
            if dim != FRAME_DIM:
                raise CogVideoXCoreError(
                    f"dim is {dim}, but the frame axis of CogVideoX latents [B, C, T, h, w] is dim {FRAME_DIM}. "
                    f"Set dim to {FRAME_DIM}.",
                    WINDOW_NODE,
                )
            if window is not None and window > frames:
                raise CogVideoXCoreError(
                    f"context_length {window} is longer than the video ({frames} latent frames = "
                    f"{fr.pixel_frames(frames)} frames). Set context_length to at most {frames} (it counts latent "
                    "frames), or remove the node for a video this short.",
                    WINDOW_NODE,
                )
            length = min(window or frames, frames)
        cfg = self.diffusion_model.config
        trained = fr.latent_frames(cfg.sample_frames)
        if cfg.use_learned_positional_embeddings and length > trained:
            raise CogVideoXCoreError(
                f"the latent has {frames} latent frames ({fr.pixel_frames(frames)} frames) but this model has learned "
                f"positions for at most {trained} ({cfg.sample_frames} frames). Make the video shorter, or put "
                f"{WINDOW_NODE} (dim {FRAME_DIM}, context_length {trained} or less) between the loader's core_model "
                "output and the sampler."
            )

    @staticmethod
    def check_patches(transformer_options: dict) -> None:
        """Patches of UNet blocks (FreeU, SAG, PAG, HyperTile, ToMe, ...) would silently do nothing here."""
        found = sorted(
            f"{kind}:{name}"
            for kind in ("patches", "patches_replace")
            for name, value in (transformer_options.get(kind) or {}).items()
            if value
        )
        if found:
            raise CogVideoXCoreError(
                f"a core model patch was applied to it ({', '.join(found)}); those patches hook into UNet blocks "
                "that CogVideoX does not have (FreeU, Self-Attention Guidance, Perturbed-Attention Guidance, "
                "HyperTile, ToMe and the like). Remove that node between the loader and the sampler.",
                "a core patch node",
            )

    # ------------------------------------------------------------------ model

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
        self.check_latent(tuple(x.shape))
        self.check_patches(transformer_options or {})
        if c_crossattn is None:
            raise CogVideoXCoreError("the conditioning has no text embeddings; connect CogVideoX Text Encode.")
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)  # VP space: sqrt(a) x0 + sqrt(1 - a) eps
        dtype = self.manual_cast_dtype or self.get_dtype()
        frames = xc.shape[2]
        pad = (-frames) % (self.diffusion_model.config.patch_size_t or 1)
        xc = pad_front(xc, pad)  # [B, 16, T + pad, h, w]
        if c_concat is not None:
            concat = self.window_concat(c_concat, frames, transformer_options or {})
            xc = torch.cat([xc, self.pad_concat(concat.to(xc), pad)], dim=1)  # [B, 16 + extra, T + pad, h, w]
        timestep = self.model_sampling.timestep(sigma).float()
        context = c_crossattn.to(xc.device, dtype)
        ofs = None
        if getattr(self.diffusion_model, "ofs_embedding", None) is not None:
            ofs = torch.full((1,), self.variant.ofs if self.variant.ofs is not None else 2.0, device=xc.device,
                             dtype=dtype)
        try:
            v = self.diffusion_model(xc.to(dtype), timestep, context, ofs=ofs)
        except ValueError as e:  # shapes the network reports (learned positions, channels, text width)
            raise CogVideoXCoreError(str(e)) from e
        v = v[:, :, pad:].float()  # [B, 16, T, h, w]
        return self.model_sampling.calculate_denoised(sigma, v, x)


def _check_before_sampling(executor, noise, latent_image, *args, **kwargs):
    """OUTER_SAMPLE wrapper: checks the whole latent and the context windows before the first step."""
    guider = executor.class_obj
    guider.model_patcher.model.check_sampling(tuple(noise.shape), guider.model_options.get("context_handler"))
    return executor(noise, latent_image, *args, **kwargs)


def add_sampling_checks(patcher) -> None:
    """Register the checks on a patcher of a ``CogVideoXCoreModel`` (clones inherit them)."""
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "cogvideox_checks",
                                 _check_before_sampling)
