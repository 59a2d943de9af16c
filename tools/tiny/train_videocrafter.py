"""Train the tiny VideoCrafter-architecture models (T2V and I2V) on the synthetic clips.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python tools/tiny/train_videocrafter.py --threads 1 \\
        --stage encoders,vae,data,t2v,i2v --out build/vc_tiny

Everything goes through the shipped loader's own code (``nodes/videocrafter_loading.py``, inside
the real ComfyUI of ``build/comfyui``, imported as the tests import it), so the text and image
tokens the U-Nets are trained on are exactly those the nodes build at inference:

- **encoders**: an OpenCLIP text tower and an OpenCLIP ViT image tower (the layouts of SD2's
  ViT-H text encoder and VideoCrafter's image embedder) with small widths and **frozen random
  weights** (seed 0, OpenCLIP's init scheme), like the CogVideoX tiny's T5.
- **vae**: an SD-layout VAE (4 latent channels, 8x; core's ``AutoencoderKL``) trained on frames,
  then rescaled so its latents times SD's 0.18215 have unit std (folded into quant_conv /
  post_quant_conv: the same decoder output).
- **data**: clips of ``cogvideox.synthetic`` drawn with 22 frames and read at a frame stride
  1, 2 or 3 (8 frames each): the fps condition is ``24 / stride`` (24, 12, 8), so a lower fps
  means more motion per frame, as in the released models. Latents (posterior mean) and the
  first frames' CLIP vision tokens are encoded once.
- **t2v** / **i2v**: the 3D U-Net (VideoCrafter2's switches: temporal conv, fps embedding; the
  I2V one adds the image cross-attention and the resampler) with eps prediction on the
  ``use_scale`` schedule of those variants (scale_b 0.7); 10% unconditional (empty prompt, and
  for I2V the reference's mid-grey image); EMA weights shipped.

Writes ``videocrafter_tiny_t2v.safetensors`` / ``..._i2v.safetensors`` in the released-conversion
key layout (``model.diffusion_model.*`` ...), which the VideoCrafter Checkpoint Loader reads: beside
the run (``--out``) while training, into ``tiny/checkpoints`` with ``--stage export-t2v`` / ``export-i2v``.
``--levels``, ``--res-blocks`` and ``--t2v-variant`` change the U-Net for experiments (the shipped
files: one level, one res block, VideoCrafter2's switches; ``tiny/MODEL_CARD.md`` tables the runs).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import known_answers  # noqa: E402

from cogvideox import evaluation, synthetic  # noqa: E402
from videocrafter.configs import VARIANTS, ResamplerConfig  # noqa: E402
from videocrafter.resampler import Resampler  # noqa: E402
from videocrafter.sampling import guided_predictor, sample_ddim  # noqa: E402
from videocrafter.schedule import alphas_cumprod, make_ddim_schedule, scale_table  # noqa: E402
from videocrafter.unet import VideoCrafterUNet  # noqa: E402

log = logging.getLogger("tiny.videocrafter")

TINY_DIR = ROOT / "tiny" / "checkpoints"
T2V_FILE = TINY_DIR / "videocrafter_tiny_t2v.safetensors"
I2V_FILE = TINY_DIR / "videocrafter_tiny_i2v.safetensors"
FRAMES = 8
SOURCE_FRAMES = 22  # drawn per clip; strides 1..3 read 8 of them
STRIDES = (1, 2, 3)
FPS_BASE = 24  # fps = FPS_BASE // stride: 24, 12, 8
SCALE_FACTOR = 0.18215  # SD's latent scale (the model's latent format)
TEXT = dict(width=16, layers=3, mlp=64, vocab=49408, context=77)
VISION = dict(width=32, layers=2, mlp=128, patch=14, grid=16, proj=16)
VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
RESAMPLER = ResamplerConfig(dim=32, depth=2, dim_head=32, heads=1, num_queries=16, embedding_dim=32,
                            output_dim=16, ff_mult=2)  # fmt: skip
# 4 groups (8 channels each) in the norms: with 32 groups of 32 channels each norm is per channel and removes the
# per-channel timestep / fps embedding the ResBlocks add (the first run trained without any time or
# fps signal); the loader reads this from the file's metadata ("videocrafter.unet").
UNET_GROUPS = 4
T2V_VARIANT, I2V_VARIANT = VARIANTS["t2v-512-v2.0"], VARIANTS["i2v-512-v1.0"]


def variant_of(image: bool, t2v_variant: str = T2V_VARIANT.name):
    """The variant whose switches and schedule a tiny U-Net takes (``--t2v-variant`` for the T2V one)."""
    return I2V_VARIANT if image else VARIANTS[t2v_variant]


def unet_config(image: bool, levels: int = 1, t2v_variant: str = T2V_VARIANT.name, res_blocks: int = 1):
    """The tiny U-Net: ``levels`` 1 (8x8 latent only) or 2 (8x8 and a 4x4 bottom with attention, same width)."""
    base = variant_of(image, t2v_variant).unet
    return base.replace(
        model_channels=32, channel_mult=(1, 1)[:levels], num_res_blocks=res_blocks,
        attention_resolutions=(1, 2)[:levels],
        num_head_channels=16, context_dim=TEXT["width"], temporal_length=FRAMES, num_groups=UNET_GROUPS,
    )  # fmt: skip


# ------------------------------------------------------------------------------ the real loader
def comfy_loading():
    """The pack's loader module inside ComfyUI (CPU), imported as the tests import it."""
    from harness import comfy_inprocess

    pack = comfy_inprocess.load_pack()
    import importlib

    return importlib.import_module(f"{pack.__name__}.nodes.videocrafter_loading")


# ------------------------------------------------------------------------------ encoders
def _resblocks(prefix: str, width: int, layers: int, mlp: int, gen: torch.Generator) -> dict:
    """OpenCLIP ``transformer.resblocks.*`` with OpenCLIP's init (std width^-0.5, proj scaled by depth)."""
    sd = {}
    attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = torch.ones(width), torch.zeros(width)
        sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = torch.ones(width), torch.zeros(width)
        sd[p + "attn.in_proj_weight"] = torch.randn(3 * width, width, generator=gen) * attn_std
        sd[p + "attn.in_proj_bias"] = torch.zeros(3 * width)
        sd[p + "attn.out_proj.weight"] = torch.randn(width, width, generator=gen) * proj_std
        sd[p + "attn.out_proj.bias"] = torch.zeros(width)
        sd[p + "mlp.c_fc.weight"] = torch.randn(mlp, width, generator=gen) * fc_std
        sd[p + "mlp.c_fc.bias"] = torch.zeros(mlp)
        sd[p + "mlp.c_proj.weight"] = torch.randn(width, mlp, generator=gen) * proj_std
        sd[p + "mlp.c_proj.bias"] = torch.zeros(width)
    return sd


def random_encoders(seed: int = 0) -> dict[str, torch.Tensor]:
    """Frozen random OpenCLIP text + image towers in the released checkpoint's key layout."""
    gen = torch.Generator().manual_seed(seed)
    t, v = TEXT, VISION
    p = "cond_stage_model.model."
    sd = {
        p + "token_embedding.weight": (torch.randn(t["vocab"], t["width"], generator=gen) * 0.02).half(),
        p + "positional_embedding": torch.randn(t["context"], t["width"], generator=gen) * 0.01,
        p + "ln_final.weight": torch.ones(t["width"]),
        p + "ln_final.bias": torch.zeros(t["width"]),
        p + "text_projection": torch.randn(t["width"], t["width"], generator=gen) * t["width"] ** -0.5,
        p + "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    sd.update(_resblocks(p, t["width"], t["layers"], t["mlp"], gen))
    q = "embedder.model.visual."
    w = v["width"]
    sd.update({
        q + "class_embedding": torch.randn(w, generator=gen) * w**-0.5,
        q + "positional_embedding": torch.randn(v["grid"] ** 2 + 1, w, generator=gen) * w**-0.5,
        q + "conv1.weight": torch.randn(w, 3, v["patch"], v["patch"], generator=gen) * (3 * v["patch"] ** 2) ** -0.5,
        q + "ln_pre.weight": torch.ones(w), q + "ln_pre.bias": torch.zeros(w),
        q + "ln_post.weight": torch.ones(w), q + "ln_post.bias": torch.zeros(w),
        q + "proj": torch.randn(w, v["proj"], generator=gen) * w**-0.5,
    })  # fmt: skip
    sd.update(_resblocks(q, w, v["layers"], v["mlp"], gen))
    return sd


def encode_captions(clip, captions: list[str]) -> torch.Tensor:
    """``[N, 77, D]`` as core CLIP Text Encode gives them."""
    with torch.no_grad():
        return torch.cat([clip.encode_from_tokens(clip.tokenize(c)).float() for c in captions])


def vision_tokens(clip_vision, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """CLIP vision hidden states of frames ``[N, 3, H, W]`` in -1..1, as VideoCrafter Image Conditioning reads them."""
    from videocrafter.image import clip_image_input

    out = []
    with torch.no_grad():
        for chunk in frames.split(batch):
            image = ((chunk + 1) / 2).clamp(0, 1).movedim(1, -1)  # ComfyUI IMAGE [B, H, W, 3]
            hidden = clip_vision.model(pixel_values=clip_image_input(image), intermediate_output=-2)[0]
            out.append(hidden.float())
    return torch.cat(out)


# ------------------------------------------------------------------------------ vae
def build_vae():
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(embed_dim=4, ddconfig=dict(VAE_DDCONFIG))
    for m in vae.modules():  # core's ops skip weight init: run torch's own
        for base in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)
    return vae.float()


def vae_moments(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, logvar = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
    return mean, logvar.clamp(-30, 20)


def vae_decode(vae, z: torch.Tensor) -> torch.Tensor:
    return vae.decoder(vae.post_quant_conv(z))


def random_frames(gen: torch.Generator, batch: int, crop: int | None = None) -> torch.Tensor:
    """``[B, 3, H, W]`` frames of synthetic clips; ``crop``: a random ``crop``-pixel window holding the object."""
    videos, clips = synthetic.make_batch(gen, batch, **synthetic.SMALL_OBJECTS)  # [B, 3, F, H, W]
    f = torch.randint(videos.shape[2], (batch,), generator=gen)
    frames = videos[torch.arange(batch), :, f]  # [B, 3, H, W]
    if crop is None:
        return frames
    out = []
    for frame, clip, i in zip(frames, clips, f.tolist(), strict=True):
        cx, cy = (int(v) for v in clip.centres[i])
        jitter = torch.randint(-crop // 4, crop // 4 + 1, (2,), generator=gen).tolist()
        x0 = min(max(cx - crop // 2 + jitter[0], 0), frame.shape[-1] - crop)
        y0 = min(max(cy - crop // 2 + jitter[1], 0), frame.shape[-2] - crop)
        out.append(frame[:, y0 : y0 + crop, x0 : x0 + crop])
    return torch.stack(out)


def stage_vae(args, out: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    start = time.time()
    for step in range(args.vae_steps):
        x = random_frames(gen, args.vae_batch, crop=None if step % 6 == 5 else 32)
        mean, logvar = vae_moments(vae, x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen)
        rec = vae_decode(vae, z)
        weight = 1 + 4 * torch.stack([synthetic.object_mask(f) for f in x]).float()[:, None]  # [B, 1, H, W]
        recon = ((rec - x).abs() + (rec - x) ** 2) * weight
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar)
        loss = recon.mean() + args.vae_kl * kl.mean()
        for g in opt.param_groups:
            warm = min(1.0, (step + 1) / 50)
            g["lr"] = args.vae_lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.vae_steps)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.vae_steps - 1:
            log.info("vae step %d loss %.4f kl %.3f (%.2fs/step)", step, float(loss), float(kl.mean()),
                     (time.time() - start) / (step + 1))
    # rescale: latents x SD's scale factor get unit std (the decoder's output is unchanged)
    with torch.no_grad():
        x = torch.cat([random_frames(gen, 64) for _ in range(4)])
        mean, _ = vae_moments(vae, x)
        k = 1.0 / (SCALE_FACTOR * float(mean.std()))
        qc, pqc = vae.quant_conv, vae.post_quant_conv
        qc.weight[:4] *= k
        qc.bias[:4] *= k
        qc.bias[4:] += 2 * math.log(k)
        pqc.weight *= 1 / k
        rec = vae_decode(vae, vae_moments(vae, x)[0])
        log.info("vae: latent std before %.4f, rescaled by %.3f; round-trip PSNR %.2f dB on 256 frames",
                 float(mean.std()), k, synthetic.psnr(rec, x))
    torch.save({k: v.detach().clone() for k, v in vae.state_dict().items()}, out / "vae.pt")


def load_vae_module(out: Path):
    vae = build_vae()
    vae.load_state_dict(torch.load(out / "vae.pt", weights_only=True))
    return vae.eval()


# ------------------------------------------------------------------------------ data
def draw_clip(gen: torch.Generator, stride: int | None = None, **kwargs):
    """One clip of ``FRAMES`` frames read at ``stride`` from a ``SOURCE_FRAMES`` synthetic clip; (video, clip, fps).

    The tiny VideoCrafter models' data: 64x64, ``synthetic.SMALL_OBJECTS``.
    """
    if stride is None:
        stride = STRIDES[int(torch.randint(len(STRIDES), (1,), generator=gen))]
    clip = synthetic.make_clip(gen, frames=SOURCE_FRAMES, **{**synthetic.SMALL_OBJECTS, **kwargs})
    index = torch.arange(FRAMES) * stride
    return clip.video[:, index], clip, FPS_BASE // stride


def stage_data(args, out: Path, loading) -> None:
    gen = torch.Generator().manual_seed(12)
    vae = load_vae_module(out)
    enc = random_encoders()
    clip_vision = loading.load_clip_vision(enc)
    videos, labels, fps = [], [], []
    for _ in range(args.clips):
        video, clip, f = draw_clip(gen)
        videos.append(video)
        labels.append((clip.colour, clip.shape, clip.direction))
        fps.append(f)
    videos = torch.stack(videos)  # [N, 3, F, H, W]
    latents = []
    with torch.no_grad():
        for chunk in videos.split(32):
            frames = chunk.permute(0, 2, 1, 3, 4).reshape(-1, 3, 64, 64)  # [(b f), 3, H, W]
            mean, _ = vae_moments(vae, frames)
            latents.append(mean.reshape(chunk.shape[0], FRAMES, 4, 8, 8).permute(0, 2, 1, 3, 4) * SCALE_FACTOR)
    latents = torch.cat(latents)  # [N, 4, F, 8, 8], the model's (scaled) latent space
    tokens = vision_tokens(clip_vision, videos[:, :, 0])  # [N, 257, W]
    grey = vision_tokens(clip_vision, torch.zeros(1, 3, 64, 64))  # the reference's unconditional image
    log.info("data: %d clips, latent std %.3f, tokens %s", len(latents), float(latents.std()), tuple(tokens.shape))
    torch.save({"latents": latents, "tokens": tokens.half(), "grey": grey, "fps": torch.tensor(fps),
                "labels": labels}, out / "data.pt")


# ------------------------------------------------------------------------------ diffusion
class I2VModel(torch.nn.Module):
    def __init__(self, levels: int = 1, res_blocks: int = 1):
        super().__init__()
        self.unet = VideoCrafterUNet(unet_config(True, levels, res_blocks=res_blocks))
        self.resampler = Resampler(RESAMPLER)


def captions_table(loading) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    enc = random_encoders()
    clip = loading.load_clip(enc)
    captions = [synthetic.caption_for(c, s, d) for c in synthetic.PALETTE for s in synthetic.SHAPES
                for d in synthetic.DIRECTIONS]  # fmt: skip
    return captions, encode_captions(clip, captions), encode_captions(clip, [""])[0]


def train_unet(args, out: Path, loading, image: bool) -> None:
    data = torch.load(out / "data.pt", weights_only=False)
    captions, emb, empty = captions_table(loading)
    index = {c: i for i, c in enumerate(captions)}
    cap_idx = torch.tensor([index[synthetic.caption_for(*lab)] for lab in data["labels"]])
    latents, fps = data["latents"], data["fps"]
    tokens, grey = data["tokens"], data["grey"]
    schedule = variant_of(image, args.t2v_variant).schedule
    abar, scale = alphas_cumprod(schedule).float(), scale_table(schedule).float()
    gen = torch.Generator().manual_seed(3 if image else 2)
    torch.manual_seed(3 if image else 2)
    model = (I2VModel(args.levels, args.res_blocks) if image
             else VideoCrafterUNet(unet_config(False, args.levels, args.t2v_variant, args.res_blocks)))
    tag = "i2v" if image else "t2v"
    if args.resume and (out / f"{tag}.pt").exists():
        model.load_state_dict(torch.load(out / f"{tag}.pt", weights_only=True))
    elif image and (out / "t2v.pt").exists():  # start from the trained t2v: the image attention's values start at zero
        t2v = {f"unet.{k}": v for k, v in torch.load(out / "t2v.pt", weights_only=True).items()}
        missing, unexpected = model.load_state_dict(t2v, strict=False)
        assert not unexpected and all("_ip." in k or k.startswith("resampler.") for k in missing), missing
        with torch.no_grad():
            for name, p in model.unet.named_parameters():
                if "to_v_ip." in name:
                    p.zero_()
        log.info("i2v: initialised from t2v.pt (%d image-attention / resampler tensors new)", len(missing))
    ema = copy.deepcopy(model).requires_grad_(False)
    log.info("%s: %.2f M parameters", tag, sum(p.numel() for p in model.parameters()) / 1e6)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    steps = args.i2v_steps if image else args.t2v_steps
    start, avg = time.time(), 0.0
    for step in range(steps):
        idx = torch.randint(len(latents), (args.batch,), generator=gen)
        x0 = latents[idx]
        t = torch.randint(schedule.timesteps, (args.batch,), generator=gen)
        high = torch.rand(args.batch, generator=gen) < args.high_t
        t = torch.where(high, torch.randint(700, schedule.timesteps, (args.batch,), generator=gen), t)
        eps = torch.randn(x0.shape, generator=gen)
        a, s = abar[t].view(-1, 1, 1, 1, 1), scale[t].view(-1, 1, 1, 1, 1)
        xt = a.sqrt() * s * x0 + (1 - a).sqrt() * eps
        drop = torch.rand(args.batch, generator=gen) < 0.1
        context = torch.where(drop.view(-1, 1, 1), empty.expand(args.batch, -1, -1), emb[cap_idx[idx]])
        if image:
            img = torch.where(drop.view(-1, 1, 1), grey.expand(args.batch, -1, -1), tokens[idx].float())
            context = torch.cat([context, model.resampler(img)], dim=1)
            pred = model.unet(xt, t, context, fps=fps[idx])
        else:
            pred = model(xt, t, context, fps=fps[idx])
        loss = F.mse_loss(pred, eps)
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        avg = 0.98 * avg + 0.02 * float(loss) if step else float(loss)
        if step % 20 == 0 or step == steps - 1:
            log.info("%s step %d loss %.4f avg %.4f lr %.2e (%.2fs/step)", tag, step, float(loss), avg, lr,
                     (time.time() - start) / (step + 1))
        if (step + 1) % 100 == 0 or step == steps - 1:
            torch.save(ema.state_dict(), out / f"{tag}.pt")
            export(out, image, dest=out)  # a loadable checkpoint beside the run; --stage export-* ships it
    log.info("%s done: %d steps, avg loss %.4f, %.0f s", tag, steps, avg, time.time() - start)


# ------------------------------------------------------------------------------ export
def export(out: Path, image: bool, dest: Path = TINY_DIR) -> Path:
    """The checkpoint in the released-conversion key layout, written to ``dest`` (default: shipped in ``tiny/``)."""
    from safetensors.torch import save_file

    tag = "i2v" if image else "t2v"
    state = torch.load(out / f"{tag}.pt", weights_only=True)
    sd = dict(random_encoders())
    if not image:
        sd = {k: v for k, v in sd.items() if not k.startswith("embedder.")}
    vae = torch.load(out / "vae.pt", weights_only=True)
    sd.update({f"first_stage_model.{k}": v for k, v in vae.items()})
    if image:
        sd.update({f"model.diffusion_model.{k[len('unet.'):]}": v for k, v in state.items() if k.startswith("unet.")})
        sd.update({f"image_proj_model.{k[len('resampler.'):]}": v for k, v in state.items()
                   if k.startswith("resampler.")})  # fmt: skip
    else:
        sd.update({f"model.diffusion_model.{k}": v for k, v in state.items()})
    halved = ("model.diffusion_model.", "first_stage_model.")  # stored in float16 (a few MB in all)
    sd = {k: (v.half() if v.is_floating_point() and k.startswith(halved) else v).contiguous() for k, v in sd.items()}
    metadata = {"videocrafter.tiny": json.dumps({"frames": FRAMES, "width": 64, "height": 64,
                                                 "fps": {str(FPS_BASE // s): s for s in STRIDES}})}  # fmt: skip
    metadata["videocrafter.unet"] = json.dumps({"num_groups": UNET_GROUPS})
    if image:
        metadata["videocrafter.resampler"] = json.dumps(RESAMPLER.__dict__)
    path = dest / (I2V_FILE.name if image else T2V_FILE.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=metadata)
    return path


# ------------------------------------------------------------------------------ quick evaluation
def quick_eval(args, out: Path, loading, image: bool, seed: int = 0, count: int = 16) -> dict:
    """T2V/I2V through the library (DDIM eta 1 as the reference, 25 steps, CFG 7), judged by the evaluation tool."""
    captions, emb, empty = captions_table(loading)
    vae = load_vae_module(out)
    tag = "i2v" if image else "t2v"
    model = (I2VModel(args.levels, args.res_blocks) if image
             else VideoCrafterUNet(unet_config(False, args.levels, args.t2v_variant, args.res_blocks)))
    model.load_state_dict(torch.load(out / f"{tag}.pt", weights_only=True))
    model.eval()
    variant = variant_of(image, args.t2v_variant)
    sched = make_ddim_schedule(variant.schedule, args.eval_steps, 1.0)
    clip_vision = loading.load_clip_vision(random_encoders()) if image else None
    gen_clips = torch.Generator().manual_seed(4242 + seed)
    ok_colour = ok_dir = ok_known = 0
    for i in range(count):
        colour = list(synthetic.PALETTE)[i % 4]
        direction = list(synthetic.DIRECTIONS)[(i // 4) % 4]
        shape = synthetic.SHAPES[i % 3]
        video, clip, fps = draw_clip(gen_clips, stride=3, colour=colour, shape=shape, direction=direction)
        cond = emb[captions.index(clip.caption)][None]
        uncond = empty[None]
        unet = model.unet if image else model
        if image:
            with torch.no_grad():
                cond = torch.cat([cond, model.resampler(vision_tokens(clip_vision, video[None, :, 0]))], 1)
                grey = vision_tokens(clip_vision, torch.zeros(1, 3, 64, 64))
                uncond = torch.cat([uncond, model.resampler(grey)], 1)
        g = torch.Generator().manual_seed(seed * 1000 + i)
        x = torch.randn(1, 4, FRAMES, 8, 8, generator=g)
        predict = guided_predictor(lambda x, t, c, f, unet=unet: unet(x, t, c, fps=f), cond, uncond, args.eval_cfg, fps)

        def noise(x, g=g):
            return torch.randn(x.shape, generator=g)

        with torch.no_grad():
            z = sample_ddim(predict, x, sched, noise_sampler=noise)
            frames = vae_decode(vae, z[0].permute(1, 0, 2, 3) / SCALE_FACTOR)  # [F, 3, H, W]
        clip_frames = frames.permute(1, 0, 2, 3)  # [3, F, H, W]
        judged = evaluation.judge_clip(clip_frames, colour, shape, direction)
        ok_colour += judged.colour_ok
        ok_dir += judged.colour_ok and judged.direction_ok
        # the known-answer tests' own judgement (colour over the clip, direction; I2V: frame 0 vs the VAE's round trip)
        if image:
            first = video[:, 0]  # [3, H, W]
            with torch.no_grad():
                ceiling = synthetic.psnr(vae_decode(vae, vae_moments(vae, first[None])[0])[0], first)
            ok_known += known_answers.judge_i2v(clip_frames, first, colour, direction, ceiling)[0]
        else:
            ok_known += known_answers.judge_t2v(clip_frames, colour, direction)[0]
    result = {"tag": tag, "seed": seed, "colour": ok_colour / count, "colour_and_direction": ok_dir / count,
              "known_answer": ok_known / count}
    log.info("eval %s", result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="vae,data,t2v,i2v")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "vc_tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--vae-kl", type=float, default=1e-4)
    parser.add_argument("--clips", type=int, default=2048)
    parser.add_argument("--t2v-steps", type=int, default=2000)
    parser.add_argument("--i2v-steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--high-t", type=float, default=0.3)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--levels", type=int, choices=(1, 2), default=1, help="channel_mult (1,) or (1, 1)")
    parser.add_argument("--res-blocks", type=int, default=1, help="num_res_blocks per level")
    parser.add_argument("--t2v-variant", default=T2V_VARIANT.name, choices=[k for k in VARIANTS if k.startswith("t2v")],
                        help="the switches and schedule of the T2V U-Net")
    parser.add_argument("--eval-steps", type=int, default=25)
    parser.add_argument("--eval-cfg", type=float, default=7.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    loading = comfy_loading()
    for stage in args.stage.split(","):
        if stage == "vae":
            stage_vae(args, args.out)
        elif stage == "data":
            stage_data(args, args.out, loading)
        elif stage in ("t2v", "i2v"):
            train_unet(args, args.out, loading, stage == "i2v")
        elif stage in ("export-t2v", "export-i2v"):
            log.info("wrote %s", export(args.out, stage == "export-i2v"))
        elif stage in ("eval-t2v", "eval-i2v"):
            quick_eval(args, args.out, loading, stage == "eval-i2v")
        elif stage != "encoders":
            raise SystemExit(f"unknown stage {stage!r}")


if __name__ == "__main__":
    main()
