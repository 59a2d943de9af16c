"""VideoCrafter as a core ComfyUI MODEL: a ``BaseModel`` around the library's U-Net.

LATENT layout: frames as the batch, ``[T, 4, h, w]`` in the SD VAE's raw latent space (core's
convention for video models with a 2D VAE, as SVD), so core VAE Encode/Decode, previews and
KSampler work on it unchanged. The model folds it back to ``[B, 4, T, h, w]`` using the frame
count core hands it (``num_video_frames``, the noise batch).

The ``use_scale`` rescaling (``x_t = sqrt(abar) s_t x0 + sqrt(1 - abar) eps``) is carried by
:class:`VideoCrafterModelSampling`: in core's variance-exploding variables the noise level is
``sigma'_t = sqrt((1 - abar_t) / abar_t) / s_t`` and the network input is
``x * sqrt(abar_t) * s_t``, so every core sampler integrates the process the model was trained on.
"""

from __future__ import annotations

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_sampling
import comfy.supported_models_base
import torch
from einops import rearrange

from ..videocrafter import schedule as vc_schedule
from ..videocrafter.configs import ScheduleConfig, UNetConfig, Variant
from ..videocrafter.unet import VideoCrafterUNet
from .common import CogVideoXNodeError


class VideoCrafterLatentFormat(comfy.latent_formats.SD15):
    """SD's latent space (scale 0.18215); frames travel as the batch."""


class VideoCrafterModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """Discrete eps-prediction sampling with VideoCrafter's ``use_scale`` rescaling folded into sigma."""

    def __init__(self, schedule: ScheduleConfig):
        torch.nn.Module.__init__(self)
        self.sigma_data = 1.0
        self.num_timesteps = schedule.timesteps
        self.zsnr = False
        alphas = vc_schedule.alphas_cumprod(schedule)
        scales = vc_schedule.scale_table(schedule)
        self.register_buffer("scales", scales.float())
        self.set_sigmas((((1 - alphas) / alphas).sqrt() / scales).float())

    def scale_at(self, sigma: torch.Tensor) -> torch.Tensor:
        """``s`` at noise level ``sigma'`` (interpolated in log-sigma, like ``sigma(timestep)``)."""
        log_sigma = sigma.float().log().to(self.log_sigmas.device).reshape(-1)
        hi = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)
        lo = hi - 1
        w = ((log_sigma - self.log_sigmas[lo]) / (self.log_sigmas[hi] - self.log_sigmas[lo])).clamp(0, 1)
        return ((1 - w) * self.scales[lo] + w * self.scales[hi]).reshape(sigma.shape).to(sigma.device)

    def _input_factor(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar) * s`` at ``sigma'`` (``abar = 1 / (1 + (sigma' s)^2)``)."""
        s = self.scale_at(sigma)
        return s / (1 + (sigma * s) ** 2).sqrt()

    def calculate_input(self, sigma, noise):
        factor = comfy.model_sampling.reshape_sigma(self._input_factor(sigma), noise.ndim)
        return noise * factor

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        shaped = comfy.model_sampling.reshape_sigma(sigma, noise.ndim)
        if max_denoise:  # x_t ~ N(0, 1) in the model's own space
            noise = noise / comfy.model_sampling.reshape_sigma(self._input_factor(sigma), noise.ndim)
        else:
            noise = noise * shaped
        return noise + latent_image


class CoreVideoCrafterUNet(VideoCrafterUNet):
    """The library U-Net with core's call signature and frames-as-batch tensors."""

    def __init__(self, vc_config: UNetConfig, dtype=None, device=None, operations=None, **_ignored):
        super().__init__(vc_config, operations=operations if operations is not None else torch.nn)
        self.dtype = dtype or torch.float32
        self.to(device=device, dtype=self.dtype)

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kwargs):
        frames = int(kwargs.get("num_video_frames", x.shape[0]))
        if x.shape[0] % frames:
            raise ValueError(f"latent batch {x.shape[0]} is not a multiple of the video's {frames} frames")
        fps = kwargs.get("fps")
        if torch.is_tensor(fps) and fps.numel() > 1:
            fps = fps.reshape(-1)[::frames]
        video = rearrange(x, "(b t) c h w -> b c t h w", t=frames)
        out = super().forward(video, timesteps[::frames], context[::frames], fps=fps, dtype=x.dtype)
        return rearrange(out, "b c t h w -> (b t) c h w")


class VideoCrafterModelConfig(comfy.supported_models_base.BASE):
    latent_format = VideoCrafterLatentFormat
    memory_usage_factor = 2.0
    unet_extra_config: dict = {}
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

    def __init__(self, variant: Variant, unet: UNetConfig, dtype: torch.dtype):
        super().__init__({"vc_config": unet, "dtype": dtype})
        self.variant = variant


class VideoCrafterBaseModel(comfy.model_base.BaseModel):
    """Core MODEL for VideoCrafter; ``image_proj_model`` holds the I2V resampler (or None)."""

    def __init__(self, model_config: VideoCrafterModelConfig, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.EPS, device=device, unet_model=CoreVideoCrafterUNet)
        self.model_sampling = VideoCrafterModelSampling(model_config.variant.schedule)
        self.variant = model_config.variant
        self.image_proj_model = None

    def extra_conds(self, **kwargs):
        out = {}
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            self._check_context(cross_attn, "KSampler (VideoCrafter model)")
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross_attn)
        noise = kwargs.get("noise")
        if noise.ndim != 4 or noise.shape[1] != self.diffusion_model.config.in_channels:
            raise CogVideoXNodeError(
                "KSampler (VideoCrafter model)",
                f"the latent has shape {tuple(noise.shape)}; VideoCrafter samples SD latents with the frames as the "
                "batch [frames, 4, height/8, width/8]: make one with VideoCrafter Empty Latent (a [batch, 16, "
                "frames, height/8, width/8] latent is CogVideoX's)",
            )
        out["num_video_frames"] = comfy.conds.CONDConstant(noise.shape[0])
        out["fps"] = comfy.conds.CONDConstant(int(kwargs.get("fps", self.variant.fps)))
        return out

    def _check_context(self, cross_attn: torch.Tensor, node: str) -> None:
        """A clear error, naming ``node``, for conditioning this model cannot read."""
        config = self.diffusion_model.config
        text = config.text_context_len
        if cross_attn.shape[-1] != config.context_dim:
            raise CogVideoXNodeError(
                node,
                f"the conditioning is {cross_attn.shape[-1]} wide but this model reads {config.context_dim}: "
                "encode the prompt with the CLIP from VideoCrafter Checkpoint Loader (not a T5/CogVideoX one)",
            )
        if config.use_image_attention and cross_attn.shape[1] <= text:
            raise CogVideoXNodeError(
                node,
                "this image-to-video model needs image tokens in its conditioning: pass both conditionings "
                "through VideoCrafter Image Conditioning first",
            )
        if not config.use_image_attention and cross_attn.shape[1] > text:
            raise CogVideoXNodeError(
                node,
                f"the conditioning carries image tokens ({cross_attn.shape[1]} > {text}) but "
                f"{self.variant.name} is a text-to-video model: use an image-to-video checkpoint or drop "
                "VideoCrafter Image Conditioning",
            )
