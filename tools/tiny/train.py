"""Train the tiny CogVideoX-architecture model shipped in ``tiny/`` (tests and demo only).

    .venv/bin/python tools/tiny/train.py --stage all        # t5, vae, t2v, i2v in order
    .venv/bin/python tools/tiny/train.py --stage t2v --steps 500   # one stage, fewer steps

Stages (each reads what the earlier ones wrote):
- ``t5``: a 2-layer T5 v1.1 encoder with frozen random weights (fixed seed), Hugging Face keys.
- ``vae``: a narrow 3D causal VAE (the real architecture) on synthetic clips, reconstruction + KL.
- ``t2v``: a tiny text-to-video transformer (3D RoPE plus learned absolute positions, the
  5B-I2V layout), v-prediction on the CogVideoX schedule, latents scaled by the measured 1/std of
  the tiny VAE latents, 10% empty prompts; ``--high-t`` draws a share of each batch at high noise.
- ``inp``: a CogVideoX-Fun InP model (33 input channels: noisy 16 + mask 1 + masked video 16)
  fine-tuned from the i2v model (its image channels become the masked-video channels, the mask
  channel starts at zero) on start-frame / start+end-frame / text-only conditioning.
- ``control``: a CogVideoX-Fun Control model (32 channels: noisy 16 + control 16) fine-tuned from
  the i2v model on the clips' object silhouettes (white on black) as control videos.
- ``lora`` (not part of ``all``): a rank-8 LoRA on the shipped t2v that draws every shape
  **blue** whatever colour the caption asks for (clips recoloured blue, captions kept), written
  as a diffusers/PEFT LoRA to ``tiny/loras/``; ``train.py lora`` runs it.
- ``i2v``: fine-tuned from t2v with 32 input channels (first-frame latent, zero-padded in time,
  concatenated on channels; new input channels start at zero), conditioning frame noise-augmented
  with a fresh sigma = exp(N(-3, 0.5)) per sample and step in pixel space, then encoded.

CPU only, deterministic (fixed seeds, fixed thread count). Wall times are logged per stage.

This file holds the CLI and the t5 / vae / t2v / i2v stages; ``train_fun.py`` the ``inp`` and
``control`` stages, ``train_lora.py`` the ``lora`` stage, ``train_common.py`` what they share.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from train_common import (
    I2V_CONFIG,
    PATHS,
    ROOT,
    SNR_SHIFT,
    T2V_CONFIG,
    T5_CONFIG,
    VAE_CONFIG,
    LatentSet,
    add_data_arguments,
    build_t5,
    clip_options,
    data_name,
    diffusion_loss,
    ema_update,
    encode_prompts,
    load_t5,
    lr_at,
    object_window,
    set_seed,
    t5_state,
    tokenizer,
    trainable_positions,
    variant_metadata,
)
from train_fun import stage_control, stage_inp
from train_lora import stage_lora

from cogvideox import synthetic
from cogvideox.configs import SchedulerConfig, TransformerConfig, VAEConfig
from cogvideox.loading import load_vae, save_safetensors
from cogvideox.schedules import alphas_cumprod
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae import CogVideoXVAE

log = logging.getLogger("tiny.train")
__all__ = ["encode_prompts", "load_t5", "main", "tokenizer"]  # tools/tiny/evaluate.py reads the T5 from here


def stage_t5(args) -> None:
    t0 = time.time()
    model = build_t5(seed=args.seed)
    PATHS.t5.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in T5_CONFIG.items()}
    config["architectures"] = ["T5EncoderModel"]
    save_file(t5_state(model), str(PATHS.t5), metadata={"config": json.dumps(config)})
    emb = encode_prompts(model, tokenizer(), ["a red square moving right", "a blue circle moving up", ""])
    log.info("t5: wrote %s (%.1f s); embedding std %.3f, prompt distance %.3f", PATHS.t5, time.time() - t0,
             float(emb.std()), float((emb[0] - emb[1]).norm() / emb[0].norm()))


# ---------------------------------------------------------------------------------- VAE
def vae_loss(vae: CogVideoXVAE, x: torch.Tensor, gen: torch.Generator, kl_weight: float, ghosts: bool = False):
    mean, logvar = vae.encode_moments(x, frame_batch=None)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    rec_loss, rec = reconstruction_loss(vae, z, x, ghosts)
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
    return rec_loss + kl_weight * kl, rec_loss, kl, rec


def reconstruction_loss(vae: CogVideoXVAE, z: torch.Tensor, x: torch.Tensor, ghosts: bool = False):
    """Decode ``z`` and compare with ``x``: L1 + L2, object pixels weighted 5x; (loss, reconstruction)."""
    rec = vae.decode(z, frame_batch=None)
    # object pixels are a few percent of the frame: weight them up so shapes and colours come out sharp;
    # ``ghosts``: also where the reconstruction leaves the background (trails of a moving object)
    bg = x[:, :, :, :1, :1]
    off = (x - bg).abs().amax(dim=1, keepdim=True)  # [B, 1, F, H, W]
    if ghosts:
        off = torch.maximum(off, (rec.detach() - bg).abs().amax(dim=1, keepdim=True))
    weight = 1.0 + 4.0 * off.gt(0.1).float()  # [B, 1, F, H, W]
    err = (rec - x).abs() + (rec - x) ** 2
    return (err * weight).mean(), rec


def _object_crop(video: torch.Tensor, clip: synthetic.Clip, gen: torch.Generator, size: int = 32) -> torch.Tensor:
    """A ``size`` x ``size`` crop ``[3, F, size, size]`` around the object's mid-clip position, jittered."""
    left, top = object_window(clip, gen, size, video.shape[-1])
    return video[..., top : top + size, left : left + size]


def vae_config(args) -> VAEConfig:
    """The tiny VAE of this run: ``--vae-channels`` wide, sized for the ``--size`` canvas."""
    return VAE_CONFIG.replace(
        block_out_channels=tuple(args.vae_channels), sample_height=args.size, sample_width=args.size
    )


def t2v_config(args) -> TransformerConfig:
    """The tiny t2v transformer for the ``--size`` canvas (8x spatial compression), ``--t2v-heads`` wide."""
    latent = args.size // 8
    return T2V_CONFIG.replace(sample_width=latent, sample_height=latent, num_attention_heads=args.t2v_heads)


def stage_vae(args) -> None:
    gen = set_seed(args.seed + 1)
    config = vae_config(args)
    vae = CogVideoXVAE(config).train()
    if args.resume:  # continue from the VAE already written, its own config (widths) and fp32
        vae = load_vae(PATHS.vae, dtype=torch.float32)
        config = vae.config
        vae.train().requires_grad_(True)
        gen = set_seed(args.seed + 11)
    keep_scale, x0_batches = None, None
    if args.vae_decoder_only:  # the latent space stays as it is (transformers trained on it stay valid)
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
        keep_scale = load_vae(PATHS.vae).config.scaling_factor  # the transformers' latent scale, whatever the data
        if args.vae_x0_model:
            from train_decoder import DecoderBatches, X0Inputs

            x0 = X0Inputs(args.vae_x0_model, keep_scale, args.vae_x0_t)
            x0_batches = DecoderBatches(vae, x0, clip_options(args), args.vae_x0_share, args.vae_crop, args.vae_batch)
    trained = [p for p in vae.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in trained)
    opt = torch.optim.AdamW(trained, lr=args.lr_vae, weight_decay=0.0)
    steps, t0 = args.vae_steps, time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, args.lr_vae)
        if x0_batches is not None and step % 6 != 5:  # crops of x0 predictions and of posterior samples
            z, x = x0_batches(step, gen)  # [B, 16, T, c/8, c/8], [B, 3, F, c, c]
            rec, _ = reconstruction_loss(vae, z, x, args.vae_ghost_weight)
            loss, kl = rec, torch.zeros(())
        else:
            x, clips = synthetic.make_batch(gen, args.vae_batch, **clip_options(args))  # [B, 3, F, H, W]
            if step % 6 != 5:  # 5 steps in 6 on crops around the object (cheaper), every 6th whole clips
                x = torch.stack([_object_crop(v, c, gen, args.vae_crop) for v, c in zip(x, clips, strict=True)])
                # [B, 3, F, crop, crop]
            elif args.size > synthetic.SIZE:
                x = x[:1]  # a whole large canvas costs as much as a batch of crops
            loss, rec, kl, _ = vae_loss(vae, x, gen, args.kl_weight, args.vae_ghost_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        if step % args.log_every == 0 or step == steps - 1:
            log.info("vae step %d/%d loss %.4f rec %.4f kl %.3f (%.0f s)", step, steps, loss.item(), rec.item(),
                     kl.item(), time.time() - t0)
        if args.save_every and (step + 1) % (5 * args.save_every) == 0 and step + 1 < steps:
            save_vae(vae, config, clip_options(args), clips=8, scale=keep_scale)  # a checkpoint (stop early)
    save_vae(vae, config, clip_options(args), clips=args.vae_eval_clips, scale=keep_scale)
    log.info("vae: %d params, %.0f s", n_params, time.time() - t0)


def save_vae(vae: CogVideoXVAE, config: VAEConfig, clip: dict, clips: int, scale: float | None = None) -> None:
    """Write the VAE with scaling_factor = 1 / std of its posterior samples on ``clips`` eval clips
    (drawn with ``clip``, make_clip's data options), or ``scale`` when given (a decoder-only run keeps it)."""
    vae.eval()
    eval_gen = torch.Generator().manual_seed(12345)
    x, _ = synthetic.make_batch(eval_gen, clips, **clip)
    with torch.no_grad():
        mean, logvar = vae.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=eval_gen)
        rec = vae.decode(mean)
    scale = scale or 1.0 / float(z.std())
    log.info("vae eval PSNR %.2f dB on %d clips, latent std %.4f -> scaling_factor %.4f",
             synthetic.psnr(rec, x), clips, float(z.std()), scale)
    PATHS.vae.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(vae, PATHS.vae, config.replace(scaling_factor=scale))
    vae.train()


# -------------------------------------------------------------------------- transformers
def train_transformer(
    model, args, steps, lr, gen, latent_set, emb, empty, table, scale, i2v=False, tag="t2v", save=None
):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    t0, running = time.time(), None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        idx = torch.randint(0, len(latent_set), (args.batch,), generator=gen)
        first_weight = args.first_frame_weight if i2v else 1.0
        loss = diffusion_loss(model, latent_set, emb, empty, idx, table, scale, gen, i2v, args.high_t, first_weight,
                              args.object_weight, args.mid_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(args.ema, (step + 1) / (step + 10)))
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % args.log_every == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f (avg %.4f) (%.0f s)", tag, step, steps, loss.item(), running,
                     time.time() - t0)
        if save is not None and args.save_every and (step + 1) % args.save_every == 0:
            save(ema)  # a checkpoint of the EMA weights, so a run can be stopped early
    log.info("%s: %d params, %d steps in %.0f s, final avg loss %.4f", tag,
             sum(p.numel() for p in model.parameters()), steps, time.time() - t0, running)
    return ema


_PREPARED: dict = {}  # the encoded data set, shared by the t2v and i2v stages of one run


def _prepare(args):
    """The pre-encoded training set (same data seed for both stages), T5 embeddings, schedule table."""
    if not _PREPARED:
        vae = load_vae(PATHS.vae).float().eval()
        t0 = time.time()
        cache = args.out / f"latents_{args.clips}_{data_name(args)}.pt"  # shared by runs on the same VAE and data
        if args.latents_cache and cache.exists() and cache.stat().st_mtime > PATHS.vae.stat().st_mtime:
            latent_set = LatentSet.load(cache, vae)
        else:
            gen = torch.Generator().manual_seed(args.seed + 2)
            latent_set = LatentSet(vae, args.clips, gen, i2v=True, **clip_options(args))
            if args.latents_cache:
                latent_set.save(cache)
        t5, tok = load_t5(PATHS.t5), tokenizer()
        emb = encode_prompts(t5, tok, latent_set.prompts)  # [P, 226, D]
        empty = encode_prompts(t5, tok, [""])  # [1, 226, D]
        log.info("encoded %d clips, %d prompts in %.0f s", len(latent_set), len(latent_set.prompts),
                 time.time() - t0)
        table = alphas_cumprod(SchedulerConfig(snr_shift_scale=SNR_SHIFT))
        _PREPARED.update(scale=vae.config.scaling_factor, data=latent_set, emb=emb, empty=empty, table=table)
    p = _PREPARED
    return p["scale"], p["data"], p["emb"], p["empty"], p["table"]


def stage_t2v(args) -> None:
    scale, latent_set, emb, empty, table = _prepare(args)
    gen = set_seed(args.seed + 3)
    config = t2v_config(args)
    model = CogVideoXTransformer(config)
    if args.resume:  # continue from the t2v model already written (the shipped one was trained in two runs)
        from cogvideox.loading import load_transformer

        # a RoPE-only checkpoint gains zero learned positions (the same function to start from)
        written = load_transformer(PATHS.t2v, dtype=torch.float32)[0]
        missing, unexpected = model.load_state_dict(written.state_dict(), strict=False)
        if unexpected or set(missing) - {"patch_embed.pos_embedding"}:
            raise ValueError(f"cannot resume from {PATHS.t2v}: missing {missing}, unexpected {unexpected}")
        gen = set_seed(args.seed + 13)
    fresh_sincos = args.positions_init == "sincos" and not args.resume
    trainable_positions(model, sincos=fresh_sincos).train().requires_grad_(True)
    PATHS.t2v.parent.mkdir(parents=True, exist_ok=True)

    def save(m):
        meta = variant_metadata("tiny-t2v", scale, args.size)
        save_safetensors(m, PATHS.t2v, config, extra={"variant": meta})

    ema = train_transformer(
        model, args, args.t2v_steps, args.lr, gen, latent_set, emb, empty, table, scale, save=save
    )
    save(ema)
    log.info("wrote %s", PATHS.t2v)


# Weights that map something narrower (the timestep embedding) to D-sized chunks of the hidden state.
WRITES_ONLY = ("norm1.linear.weight", "norm2.linear.weight", "norm_out.linear.weight")


def widen_heads(state: dict[str, torch.Tensor], dim: int, gen: torch.Generator, jitter: float = 0.01) -> dict:
    """Twice the attention heads (inner dim ``dim`` -> ``2 * dim``), the same function (Net2Net).

    Every hidden vector ``h`` becomes ``[h, h]``: heads ``n..2n-1`` copy heads ``0..n-1``, layer
    norms see the same mean and variance, linears that read the hidden state take half the weight
    from each copy, and the timestep MLP reads the even frequencies of the wider sinusoid (which
    are the narrow one's). ``jitter`` (relative) noise on the copied weights breaks the symmetry
    so the copies can learn different things.
    """

    def noisy(t: torch.Tensor) -> torch.Tensor:
        return t + torch.randn(t.shape, generator=gen) * (jitter * float(t.std()) if t.numel() > 1 else 0.0)

    def chunks(t: torch.Tensor, axis: int) -> torch.Tensor:  # [.., k*D, ..] -> [.., k*2D, ..], each chunk doubled
        return torch.cat([p for part in t.split(dim, dim=axis) for p in (part, noisy(part))], dim=axis)

    def reads(t: torch.Tensor) -> torch.Tensor:  # [O, k*D] -> [O, k*2D], half the weight from each copy
        return chunks(t / 2, 1)

    out = {}
    for name, t in state.items():
        if name == "time_embedding.linear_1.weight":  # [T, D] over [cos | sin] of D/2 frequencies each
            half = dim // 2
            wide = torch.zeros(t.shape[0], 2 * dim)
            wide[:, 0 : dim : 2] = t[:, :half]  # cos, frequency k -> 2k of the wider sinusoid
            wide[:, dim :: 2] = t[:, half:]  # sin
            out[name] = wide
        elif name.startswith("time_embedding") or ".norm_q." in name or ".norm_k." in name:
            out[name] = t.clone()  # time_embed_dim and head_dim are unchanged
        elif name == "patch_embed.pos_embedding":
            out[name] = chunks(t, 2)
        elif name == "proj_out.weight":
            out[name] = reads(t)
        elif name == "proj_out.bias":
            out[name] = t.clone()
        elif t.ndim == 1 or name.startswith("patch_embed") or name.endswith(WRITES_ONLY):
            out[name] = chunks(t, 0)  # writes the hidden state (or D-sized chunks of it)
        else:  # q, k, v, attention out, feed-forward: read and write hidden-sized axes
            out[name] = chunks(reads(t), 0)
    return out


def stage_i2v(args) -> None:
    from cogvideox.loading import load_transformer

    scale, latent_set, emb, empty, table = _prepare(args)
    latent_set.augment_image = args.i2v_image == "augmented"
    scratch = args.i2v_init == "scratch" and not args.resume  # a fresh model, trained on image-to-video alone
    gen = set_seed(args.seed + (16 if scratch else 4))
    config = t2v_config(args).replace(in_channels=I2V_CONFIG.in_channels, num_attention_heads=args.i2v_heads)
    model = CogVideoXTransformer(config)
    if args.resume:  # continue from the i2v model already written (twice as wide: its heads copied)
        before = load_transformer(PATHS.i2v, dtype=torch.float32)[0]
        state, heads = before.state_dict(), before.config.num_attention_heads
        if args.i2v_heads == 2 * heads:
            state = widen_heads(state, before.config.inner_dim, torch.Generator().manual_seed(args.seed + 24))
        elif args.i2v_heads != heads:
            raise ValueError(f"--i2v-heads {args.i2v_heads}: {PATHS.i2v} has {heads} heads; keep or double them")
        model.load_state_dict(state, strict=True)
        gen = set_seed(args.seed + (14 if args.i2v_heads == heads else 15))
    elif not scratch:  # from the t2v model, the 16 new input channels (the image latent) of patch_embed.proj at zero
        base, _ = load_transformer(PATHS.t2v, dtype=torch.float32)
        if args.i2v_heads != base.config.num_attention_heads:
            raise ValueError("--i2v-heads other than the t2v model's needs --resume of an i2v model to widen")
        state = {k: v.clone() for k, v in base.state_dict().items()}
        w = state["patch_embed.proj.weight"]  # [D, 16, p, p] -> [D, 32, p, p], new channels zero
        state["patch_embed.proj.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
        model.load_state_dict(state, strict=True)
    trainable_positions(model, sincos=scratch and args.positions_init == "sincos").train().requires_grad_(True)

    def save(m):
        save_safetensors(m, PATHS.i2v, config, extra={"variant": variant_metadata("tiny-i2v", scale, args.size)})

    ema = train_transformer(
        model, args, args.i2v_steps, args.lr_i2v, gen, latent_set, emb, empty, table, scale, i2v=True, tag="i2v",
        save=save,
    )
    save(ema)
    log.info("wrote %s", PATHS.i2v)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage_name", nargs="?", help="the same as --stage (e.g. `train.py lora`)")
    p.add_argument("--stage", default="all",
                   help="t5, vae, t2v, i2v, inp, control, all, lora, or a comma-separated list")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=240)
    p.add_argument("--vae-batch", type=int, default=4)
    p.add_argument("--lr-vae", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=synthetic.SIZE,
                   help="canvas (square, pixels): objects and travel scale with it (synthetic.make_clip)")
    add_data_arguments(p)
    p.add_argument("--vae-channels", type=lambda s: [int(c) for c in s.split(",")],
                   default=list(VAE_CONFIG.block_out_channels), help="VAE block_out_channels, e.g. 16,32,64,64")
    p.add_argument("--vae-ghost-weight", action="store_true",
                   help="VAE: weight object pixels of the reconstruction too (its trails), not only of the clip")
    p.add_argument("--vae-decoder-only", action="store_true",
                   help="VAE --resume: train the decoder alone (the encoder, hence the latent space, frozen)")
    p.add_argument("--vae-x0-model", type=Path, default=None,
                   help="VAE --vae-decoder-only: a T2V transformer file whose x0 predictions the decoder also learns "
                        "to decode to the clean clip (tools/tiny/train_decoder.py)")
    p.add_argument("--vae-x0-t", type=int, default=300, help="--vae-x0-model: timesteps below this")
    p.add_argument("--vae-x0-share", type=float, default=0.5, help="--vae-x0-model: share of the crops from it")
    p.add_argument("--vae-crop", type=int, default=32, help="VAE: side of the crops around the object")
    p.add_argument("--vae-eval-clips", type=int, default=32,
                   help="VAE: clips whose posterior sets the scaling factor and whose PSNR is logged at the end")
    p.add_argument("--resume", action="store_true", help="continue training the model the stage already wrote")
    p.add_argument("--clips", type=int, default=1536, help="clips pre-encoded for the transformers")
    p.add_argument("--latents-cache", action="store_true",
                   help="keep the pre-encoded clips in --out (reused while the VAE file is older than them)")
    p.add_argument("--t2v-steps", type=int, default=1500)
    p.add_argument("--i2v-steps", type=int, default=600)
    p.add_argument("--inp-steps", type=int, default=600, help="inp / control: Fun fine-tuning steps (lr: --lr-i2v)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-i2v", type=float, default=5e-4)
    p.add_argument("--high-t", type=float, default=0.0,
                   help="share of each transformer batch with t drawn from [700, 999] (the layout-deciding steps)")
    p.add_argument("--first-frame-weight", type=float, default=1.0,
                   help="i2v: loss weight of latent frame 0, the frame copied from the condition")
    p.add_argument("--mid-t", type=float, default=0.0,
                   help="t2v / i2v: share of each batch with t drawn from [200, 700) (the shape-deciding steps)")
    p.add_argument("--object-weight", type=float, default=1.0,
                   help="t2v, i2v, inp, control, lora: loss weight of the object's latent pixels (~21%% of a clip)")
    p.add_argument("--t2v-heads", type=int, default=T2V_CONFIG.num_attention_heads, help="t2v attention heads (x16)")
    p.add_argument("--i2v-init", choices=["t2v", "scratch"], default="t2v",
                   help="i2v without --resume: start from the written t2v model (default) or from a random init")
    p.add_argument("--i2v-image", choices=["augmented", "clean"], default="augmented",
                   help="i2v condition: the first frame noise-augmented and encoded each step, or its clean latent")
    p.add_argument("--positions-init", choices=["zero", "sincos"], default="zero",
                   help="a fresh model's learned position table: zero, or 3D sin-cos (as diffusers starts 5B-I2V's)")
    p.add_argument("--i2v-heads", type=int, default=T2V_CONFIG.num_attention_heads,
                   help="i2v attention heads; with --resume, twice the written model's widens it (heads copied)")
    p.add_argument("--control-swap", type=float, default=0.0,
                   help="control: share of samples captioned with another direction than the control video moves")
    # The shipped LoRA: `train.py lora --threads 1 --high-t 0.5 --batch 8` with these defaults.
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-steps", type=int, default=800)
    p.add_argument("--lora-clips", type=int, default=384)
    p.add_argument("--lr-lora", type=float, default=5e-3)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=100, help="transformers: checkpoint the EMA every N steps")
    p.add_argument("--out", type=Path, default=ROOT / "tiny", help="output folder (default: the shipped tiny/)")
    args = p.parse_args(argv)
    PATHS.set_out(args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    runners = {"t5": stage_t5, "vae": stage_vae, "t2v": stage_t2v, "i2v": stage_i2v, "inp": stage_inp,
               "control": stage_control, "lora": stage_lora}
    stage = args.stage_name or args.stage
    stages = [s for s in runners if s != "lora"] if stage == "all" else stage.split(",")
    unknown = [s for s in stages if s not in runners]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {[*runners, 'all']}")
    for stage in stages:
        t0 = time.time()
        runners[stage](args)
        log.info("stage %s done in %.0f s", stage, time.time() - t0)


if __name__ == "__main__":
    main()
