"""VideoCrafter1 / VideoCrafter2 (AILab-CVC/VideoCrafter, ``lvdm``) in plain torch.

A latent video diffusion model: a 3D U-Net (spatial ResBlocks and transformers with a temporal
transformer after every spatial one), frame-rate conditioning, the Stable Diffusion 2D VAE,
OpenCLIP ViT-H text tokens and, for image-to-video, CLIP image tokens resampled to 16 tokens and
read by a second cross-attention. Parameter names are the upstream ones (``model.diffusion_model.``
and ``image_proj_model.`` stripped), so converted checkpoints load with no remapping table.

Modules: ``configs`` (variants and their detection from weights), ``unet`` / ``blocks`` /
``attention`` (the network), ``resampler`` (the image projection), ``schedule`` (betas, the
``use_scale`` ramp, DDIM timesteps) and ``sampling`` (the reference DDIM with eta and guidance).
Never imports comfy.
"""
