"""Fine-tune the tiny VAE's decoder on what the transformers actually hand it (``train.py --stage vae
--resume --vae-decoder-only --vae-x0-model FILE``).

A diffusion model's final latent is never exactly on the encoder's manifold: its errors are
structured (edges shifted, corners rounded), and the decoder, trained only on posterior samples,
turns them into lumpy outlines. Here a share of each decoder batch is the transformer's own
guided x0 prediction from the clip's latent noised to a low timestep, with the clean clip as
the target, so the decoder learns to map the model's near-misses back onto clean objects. The
encoder is frozen, so the latent space (and every transformer trained on it) stays valid; the
rest of each batch keeps the posterior samples so the round trip does not degrade. The same
idea as decoders that finish the denoising (LTX-Video's timestep-conditioned decoder, OpenAI's
consistency decoder for SD), in its simplest form: no timestep input, only a matched input
distribution.

Clips are encoded in pools (``POOL`` clips, reused for ``REUSE`` steps with fresh noise, t and
crops): encoding whole 128x128 clips costs more than a decoder step on crops.
"""

from __future__ import annotations

from pathlib import Path

import torch
from train_common import PATHS, SNR_SHIFT, encode_prompts, load_t5, object_window, tokenizer

from cogvideox import guidance, synthetic
from cogvideox.configs import SchedulerConfig
from cogvideox.loading import load_transformer
from cogvideox.schedules import alphas_cumprod

POOL, REUSE = 32, 16


class X0Inputs:
    """The guided x0 prediction of a T2V transformer from a clip's latent noised to t < ``t_max``."""

    def __init__(self, path: Path, scale: float, t_max: int = 300, cfg: float = 6.0):
        self.model = load_transformer(path)[0].float().eval().requires_grad_(False)
        self.scale, self.t_max, self.cfg = scale, t_max, cfg
        self.captions = [synthetic.caption_for(c, s, d) for c in synthetic.PALETTE for s in synthetic.SHAPES
                         for d in synthetic.DIRECTIONS]  # fmt: skip
        t5, tok = load_t5(PATHS.t5), tokenizer()
        with torch.no_grad():
            self.emb = encode_prompts(t5, tok, self.captions)  # [48, 226, D]
            self.empty = encode_prompts(t5, tok, [""])  # [1, 226, D]
        self.table = alphas_cumprod(SchedulerConfig(snr_shift_scale=SNR_SHIFT)).float()

    @torch.no_grad()
    def __call__(self, mean: torch.Tensor, captions: list[str], gen: torch.Generator) -> torch.Tensor:
        """Posterior means ``[B, 16, T, h, w]`` (unscaled) -> x0 predictions in the same (unscaled) space."""
        b = mean.shape[0]
        z0 = mean * self.scale
        t = torch.randint(0, self.t_max, (b,), generator=gen)
        a = self.table[t].view(b, 1, 1, 1, 1)
        xt = a.sqrt() * z0 + (1 - a).sqrt() * torch.randn(z0.shape, generator=gen)
        emb = self.emb[[self.captions.index(c) for c in captions]]  # [B, 226, D]
        v = guidance.guided(  # classifier-free guidance, uncond and cond in one batch, as the sampler node runs it
            lambda xs, ctx: self.model(xs, t.repeat(xs.shape[0] // b), ctx), xt, emb,
            self.empty.expand(b, -1, -1), self.cfg, True,
        )
        return (a.sqrt() * xt - (1 - a).sqrt() * v) / self.scale  # x0 from the v-prediction


def latent_crops(
    z: torch.Tensor, x: torch.Tensor, clips: list[synthetic.Clip], gen: torch.Generator, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matching crops around each object: latents ``[B, 16, T, crop/8, crop/8]`` and pixels
    ``[B, 3, F, crop, crop]`` (8-pixel aligned, so the decoder's output lines up with the target)."""
    side = crop // 8
    zs, xs = [], []
    for zi, xi, clip in zip(z, x, clips, strict=True):
        left, top = object_window(clip, gen, side, z.shape[-1], grid=8)  # in latent pixels
        zs.append(zi[..., top : top + side, left : left + side])
        xs.append(xi[..., 8 * top : 8 * (top + side), 8 * left : 8 * (left + side)])
    return torch.stack(zs), torch.stack(xs)


class DecoderBatches:
    """Decoder inputs and targets: a share ``x0_share`` of the x0 predictions, the rest posterior samples."""

    def __init__(self, vae, x0: X0Inputs, clip_options: dict, x0_share: float, crop: int, batch: int):
        self.vae, self.x0, self.clip_options = vae, x0, clip_options
        self.x0_share, self.crop, self.batch = x0_share, crop, batch
        self.pool = None

    @torch.no_grad()
    def _refill(self, gen: torch.Generator) -> None:
        x, clips = synthetic.make_batch(gen, POOL, **self.clip_options)  # [P, 3, F, H, W]
        mean, logvar = self.vae.encode_moments(x)  # [P, 16, T, h, w] each (encoder frozen)
        self.pool = (x, clips, mean, logvar)

    def __call__(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if step % REUSE == 0 or self.pool is None:
            self._refill(gen)
        x, clips, mean, logvar = self.pool
        idx = torch.randint(len(clips), (self.batch,), generator=gen)
        picked = [clips[i] for i in idx.tolist()]
        mean, logvar = mean[idx], logvar[idx]  # [B, 16, T, h, w]
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
        use = torch.rand(self.batch, generator=gen) < self.x0_share  # [B]
        if use.any():  # the transformer runs only on the samples that take its prediction
            z[use] = self.x0(mean[use], [c.caption for c, u in zip(picked, use.tolist(), strict=True) if u], gen)
        return latent_crops(z, x[idx], picked, gen, self.crop)
