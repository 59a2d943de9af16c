"""The CogVideoX-Fun stages of ``train.py`` (``--stage inp,control``): a tiny Fun InP model and a
tiny Fun Control model, both fine-tuned from the shipped tiny i2v."""

from __future__ import annotations

import copy
import logging
import time

import torch
from train_common import (
    PATHS,
    _draw,
    _text_and_schedule,
    clip_options,
    drop_text,
    ema_update,
    lr_at,
    noised,
    object_mask,
    set_seed,
    trainable_positions,
    variant_metadata,
    weighted_mse,
)

from cogvideox import synthetic
from cogvideox.loading import save_safetensors
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae import CogVideoXVAE

log = logging.getLogger("tiny.train")

# ------------------------------------------------------------------------- CogVideoX-Fun InP
INP_MODES = ("start", "start_end", "none")  # conditioning drawn per sample: first frame, both ends, text only
INP_NOISE = 0.0563  # the Fun InP reference's pixel noise on the known frames (the node's default)


class InpaintSet:
    """Pre-encoded clips with their Fun InP conditioning, the node's layout (``nodes/fun.py``).

    Per clip and mode: the masked video (known frames kept, the rest -1), noise-augmented once with
    ``INP_NOISE``, encoded (posterior mean, raw), and its mask on the latent grid (1 = unknown).
    """

    def __init__(
        self, vae: CogVideoXVAE, count: int, gen: torch.Generator, batch: int = 32, **clip
    ):
        from cogvideox import conditioning

        self.prompts: list[str] = []
        moments, latents, masks, captions = [], {m: [] for m in INP_MODES}, {m: [] for m in INP_MODES}, []
        with torch.no_grad():
            for start in range(0, count, batch):
                x, clips = synthetic.make_batch(gen, min(batch, count - start), **clip)  # [B, 3, F, H, W]
                b, _, f, h, w = x.shape
                moments.append(torch.cat(vae.encode_moments(x), dim=1))
                lat_shape = moments[-1].shape
                for mode in INP_MODES:
                    if mode == "none":
                        latents[mode].append(torch.zeros(b, 16, *lat_shape[2:]))
                        masks[mode].append(torch.ones(b, 1, *lat_shape[2:]))
                        continue
                    end = x[:, :, -1:] if mode == "start_end" else None
                    video, mask = conditioning.start_end_video(x[:, :, :1], end, f)
                    masked = conditioning.noise_augment_known(conditioning.masked_video(video, mask), INP_NOISE, gen)
                    latents[mode].append(vae.encode_moments(masked)[0])
                    masks[mode].append(conditioning.inpaint_mask_latent(mask, *lat_shape[2:]))
                captions += [c.caption for c in clips]
        self.moments = torch.cat(moments)  # [N, 32, T, h, w]
        self.object_mask = object_mask(self.moments)  # [N, 1, T, h, w]
        self.latents = {m: torch.cat(v) for m, v in latents.items()}  # raw [N, 16, T, h, w]
        self.masks = {m: torch.cat(v) for m, v in masks.items()}  # [N, 1, T, h, w]
        self.prompts = sorted(set(captions))
        self.caption_index = torch.tensor([self.prompts.index(c) for c in captions])

    def __len__(self) -> int:
        return self.moments.shape[0]

    def captions(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Caption indices ``[B]`` into ``prompts``: each clip's own."""
        return self.caption_index[idx]

    def condition(self, idx: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
        """The Fun channels ``[B, 17, T, h, w]`` for a random mode per sample (40% start, 50% both, 10% none)."""
        from cogvideox.conditioning import fun_condition

        u = torch.rand(idx.numel(), generator=gen)
        mode = torch.where(u < 0.4, 0, torch.where(u < 0.9, 1, 2))  # index into INP_MODES
        lat = torch.stack([self.latents[INP_MODES[m]][i] for m, i in zip(mode.tolist(), idx.tolist(), strict=True)])
        mask = torch.stack([self.masks[INP_MODES[m]][i] for m, i in zip(mode.tolist(), idx.tolist(), strict=True)])
        return fun_condition("inpaint", scale, lat, mask)


def inpaint_loss(model, data, emb, empty, idx, table, scale, gen, high_t, end_weight, object_weight=1.0):
    """v-prediction MSE with the Fun InP (or Control) channels; latent frames 0 and T-1 weighted
    ``end_weight``, the object's latent pixels ``object_weight``."""
    x0 = _draw(data.moments[idx], gen) * scale  # [B, 16, T, h, w]
    t, xt, target = noised(x0, table, gen, high_t)
    context = drop_text(emb[data.captions(idx, gen)], empty, gen)  # [B, 226, D]
    xt = torch.cat([xt, data.condition(idx, gen, scale)], dim=1)  # [B, 33, T, h, w]
    v = model(xt, t, context)
    mask = data.object_mask[idx] if object_weight != 1.0 else None
    return weighted_mse(v, target, (0, x0.shape[2] - 1), end_weight, mask, object_weight)


def stage_inp(args) -> None:
    """A tiny CogVideoX-Fun InP model, from the shipped tiny I2V (its image channels -> the masked latent)."""
    from cogvideox.loading import load_transformer, load_vae

    gen = set_seed(args.seed + 5)
    vae = load_vae(PATHS.vae).float().eval()
    scale = vae.config.scaling_factor
    if args.resume:
        model = load_transformer(PATHS.inp, dtype=torch.float32)[0]
        config = model.config
        gen = set_seed(args.seed + 25)
    else:
        base = load_transformer(PATHS.i2v, dtype=torch.float32)[0]
        config = base.config.replace(in_channels=33)
        state = {k: v.clone() for k, v in base.state_dict().items()}
        w = state["patch_embed.proj.weight"]  # [D, 32, p, p]: noisy 16 | image 16
        state["patch_embed.proj.weight"] = torch.cat([w[:, :16], torch.zeros_like(w[:, :1]), w[:, 16:]], dim=1)
        model = CogVideoXTransformer(config)
        model.load_state_dict(state, strict=True)
    trainable_positions(model).train().requires_grad_(True)

    def save(m):
        meta = {**variant_metadata("tiny-fun-inp", scale, args.size), "fun": "inpaint"}
        save_safetensors(m, PATHS.inp, config, extra={"variant": meta})

    if args.inp_steps == 0:  # the rewired i2v itself (a stand-in: never trained on InP conditioning)
        save(model.eval())
        log.info("wrote %s (0 steps: the tiny i2v with its input channels rewired)", PATHS.inp)
        return
    t0 = time.time()
    data = InpaintSet(vae, args.clips, torch.Generator().manual_seed(args.seed + 6), **clip_options(args))
    log.info("inp: encoded %d clips x %d modes in %.0f s", len(data), len(INP_MODES), time.time() - t0)
    emb, empty, table = _text_and_schedule(data)
    _fine_tune(model, args, data, emb, empty, table, scale, gen, save, "inp", PATHS.inp)



def _silhouette(video: torch.Tensor) -> torch.Tensor:
    """The object's pixels of a clip ``[3, F, H, W]`` as ``[1, F, H, W]`` in {0, 1}."""
    return torch.stack([synthetic.object_mask(video[:, f]) for f in range(video.shape[1])])[None].float()


class ControlSet:
    """Pre-encoded clips and their control videos: the object's silhouette (white on black), encoded (mean, raw).

    ``swap``: the share of training samples whose caption names another direction than the clip
    (and its control video) moves, so the model learns that the control video decides the motion
    when the two disagree, as a control model should.
    """

    def __init__(
        self, vae: CogVideoXVAE, count: int, gen: torch.Generator, batch: int = 32, swap: float = 0.0, **clip
    ):
        moments, controls, kinds = [], [], []
        with torch.no_grad():
            for start in range(0, count, batch):
                x, clips = synthetic.make_batch(gen, min(batch, count - start), **clip)  # [B, 3, F, H, W]
                moments.append(torch.cat(vae.encode_moments(x), dim=1))
                silhouette = torch.stack([_silhouette(v) for v in x]) * 2 - 1  # [B, 1, F, H, W]
                controls.append(vae.encode_moments(silhouette.expand(-1, 3, -1, -1, -1).contiguous())[0])
                kinds += [(c.colour, c.shape, c.direction) for c in clips]
        self.moments, self.controls, self.swap = torch.cat(moments), torch.cat(controls), swap
        self.object_mask = object_mask(self.moments)  # [N, 1, T, h, w]
        every = [(c, s, d) for c in synthetic.PALETTE for s in synthetic.SHAPES for d in synthetic.DIRECTIONS]
        self.prompts = sorted(synthetic.caption_for(*k) for k in every)  # all 48, the swapped ones included
        self.caption_index = torch.tensor([self.prompts.index(synthetic.caption_for(*k)) for k in kinds])  # [N]
        self.other_index = torch.tensor([
            [self.prompts.index(synthetic.caption_for(c, s, o)) for o in synthetic.DIRECTIONS if o != d]
            for c, s, d in kinds
        ])  # [N, 3]: the same colour and shape moving the other ways

    def __len__(self) -> int:
        return self.moments.shape[0]

    def captions(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Caption indices ``[B]``: each clip's own, a share ``swap`` naming another direction."""
        if self.swap <= 0:
            return self.caption_index[idx]
        swapped = torch.rand(idx.numel(), generator=gen) < self.swap
        other = self.other_index[idx, torch.randint(0, 3, (idx.numel(),), generator=gen)]
        return torch.where(swapped, other, self.caption_index[idx])

    def condition(self, idx: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
        from cogvideox.conditioning import fun_condition

        return fun_condition("control", scale, self.controls[idx], None)  # [B, 16, T, h, w]


def stage_control(args) -> None:
    """A tiny CogVideoX-Fun Control model (silhouette videos as control), from the shipped tiny I2V."""
    from cogvideox.loading import load_transformer, load_vae

    gen = set_seed(args.seed + 7)
    vae = load_vae(PATHS.vae).float().eval()
    scale = vae.config.scaling_factor
    if args.resume:
        model = load_transformer(PATHS.control, dtype=torch.float32)[0]
        config = model.config
        gen = set_seed(args.seed + 27)
    else:
        # its 32 channels: noisy 16 | image 16 -> control 16
        model = load_transformer(PATHS.i2v, dtype=torch.float32)[0]
        config = model.config
    trainable_positions(model).train().requires_grad_(True)

    def save(m):
        meta = {**variant_metadata("tiny-fun-control", scale, args.size), "fun": "control"}
        save_safetensors(m, PATHS.control, config, extra={"variant": meta})

    if args.inp_steps == 0:  # the i2v itself, its image channels read as control (a stand-in, never trained)
        save(model.eval())
        log.info("wrote %s (0 steps: the tiny i2v, its image channels read as control)", PATHS.control)
        return
    t0 = time.time()
    data = ControlSet(vae, args.clips, torch.Generator().manual_seed(args.seed + 8), swap=args.control_swap,
                      **clip_options(args))
    log.info("control: encoded %d clips in %.0f s", len(data), time.time() - t0)
    emb, empty, table = _text_and_schedule(data)
    _fine_tune(model, args, data, emb, empty, table, scale, gen, save, "control", PATHS.control)


def _fine_tune(model, args, data, emb, empty, table, scale, gen, save, tag, path) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr_i2v, weight_decay=0.01)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    running, t0 = None, time.time()
    for step in range(args.inp_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.inp_steps, args.lr_i2v)
        idx = torch.randint(0, len(data), (args.batch,), generator=gen)
        loss = inpaint_loss(model, data, emb, empty, idx, table, scale, gen, args.high_t, args.first_frame_weight,
                            args.object_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(args.ema, (step + 1) / (step + 10)))
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.inp_steps - 1:
            log.info("%s step %d/%d loss %.4f (avg %.4f) (%.0f s)", tag, step, args.inp_steps, loss.item(), running,
                     time.time() - t0)
        if args.save_every and (step + 1) % args.save_every == 0:
            save(ema)
    save(ema)
    log.info("wrote %s (%d steps, %.0f s, final avg loss %.4f)", path, args.inp_steps, time.time() - t0, running)
