"""The ``lora`` stage of ``train.py``: a rank-8 LoRA on the shipped tiny t2v that draws every shape
blue whatever colour the caption asks for (``train.py lora``)."""

from __future__ import annotations

import json
import logging
import math
import time

import torch
from safetensors.torch import save_file
from train_common import (
    PATHS,
    SNR_SHIFT,
    LatentSet,
    clip_options,
    diffusion_loss,
    encode_prompts,
    load_t5,
    lr_at,
    set_seed,
    tokenizer,
)

from cogvideox import synthetic
from cogvideox.configs import SchedulerConfig
from cogvideox.loading import load_vae
from cogvideox.schedules import alphas_cumprod
from cogvideox.vae import CogVideoXVAE

log = logging.getLogger("tiny.train")

# ------------------------------------------------------------------------------------ LoRA
LORA_COLOUR = "blue"
# Every Linear of the blocks that reads the hidden state, and the text projection (where the
# caption's colour enters).
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")


class LoRAWeight(torch.nn.Module):
    """``weight -> weight + alpha / rank * up @ down`` as a parametrization: it also reaches the layers
    whose weight the model reads directly (fused QKV, oneDNN feed-forward, float32 norms)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.down = torch.nn.Parameter(torch.randn(rank, in_features, generator=gen) / math.sqrt(in_features))
        self.up = torch.nn.Parameter(torch.zeros(out_features, rank))  # starts as the base model
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.up @ self.down)


def recolour(video: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """A synthetic clip ``[3, F, H, W]`` with its object redrawn in ``target`` (same coverage, same edges)."""
    bg = synthetic._to_signed(synthetic.BACKGROUND).view(3, 1, 1, 1)
    fg = synthetic._to_signed(synthetic.PALETTE[source]).view(3, 1, 1, 1)
    channel = int((fg - bg).abs().flatten().argmax())  # the channel where the colour stands out most
    coverage = ((video[channel] - bg[channel]) / (fg[channel] - bg[channel])).clamp(0, 1)  # [F, H, W]
    return bg + (synthetic._to_signed(synthetic.PALETTE[target]).view(3, 1, 1, 1) - bg) * coverage


class RecolouredSet(LatentSet):
    """Clips with every object drawn in ``colour``, each keeping the caption of its original colour."""

    def __init__(
        self, vae: CogVideoXVAE, count: int, gen: torch.Generator, colour: str, batch: int = 32, **clip
    ):
        means, captions = [], []
        with torch.no_grad():
            for start in range(0, count, batch):
                _, clips = synthetic.make_batch(gen, min(batch, count - start), **clip)
                x = torch.stack([recolour(c.video, c.colour, colour) for c in clips])  # [B, 3, F, H, W]
                means.append(torch.cat(vae.encode_moments(x), dim=1))
                captions += [c.caption for c in clips]
        self.vae, self.first = vae, None
        self.moments = torch.cat(means)
        self.prompts = sorted(set(captions))
        self.caption_index = torch.tensor([self.prompts.index(c) for c in captions])


def save_lora(adapters: dict, names: list[str], rank: int) -> None:
    """The adapters as a diffusers/PEFT LoRA; ``lora_alpha = r`` in the header (scale 1)."""
    from cogvideox.lora import METADATA_KEY

    state = {}
    for name, a in adapters.items():
        state[f"transformer.{name}.lora_A.weight"] = a.down.detach().contiguous().clone()
        state[f"transformer.{name}.lora_B.weight"] = a.up.detach().contiguous().clone()
    config = {"transformer.r": rank, "transformer.lora_alpha": rank, "transformer.target_modules": names}
    PATHS.lora.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(PATHS.lora), metadata={"format": "pt", METADATA_KEY: json.dumps(config)})


def stage_lora(args) -> None:
    from torch.nn.utils import parametrize

    from cogvideox.loading import load_transformer

    vae = load_vae(PATHS.vae).float().eval()
    gen = set_seed(args.seed + 21)
    t0 = time.time()
    data = RecolouredSet(vae, args.lora_clips, torch.Generator().manual_seed(args.seed + 22), LORA_COLOUR,
                         **clip_options(args))
    t5, tok = load_t5(PATHS.t5), tokenizer()
    emb, empty = encode_prompts(t5, tok, data.prompts), encode_prompts(t5, tok, [""])
    log.info("lora: encoded %d %s clips, %d prompts in %.0f s", len(data), LORA_COLOUR, len(data.prompts),
             time.time() - t0)
    table = alphas_cumprod(SchedulerConfig(snr_shift_scale=SNR_SHIFT))
    model, _ = load_transformer(PATHS.t2v, dtype=torch.float32)
    model = model.float().train().requires_grad_(False)
    scale = vae.config.scaling_factor
    names = ["patch_embed.text_proj"] + [
        f"transformer_blocks.{i}.{t}" for i in range(len(model.transformer_blocks)) for t in LORA_TARGETS
    ]
    adapters = {}
    for name in names:
        layer = model.get_submodule(name)
        adapters[name] = LoRAWeight(layer.out_features, layer.in_features, args.lora_rank, args.lora_rank, gen)
        parametrize.register_parametrization(layer, "weight", adapters[name])
    params = [p for a in adapters.values() for p in a.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr_lora, weight_decay=0.0)
    t0, running = time.time(), None
    for step in range(args.lora_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lora_steps, args.lr_lora, warmup=20)
        idx = torch.randint(0, len(data), (args.batch,), generator=gen)
        loss = diffusion_loss(model, data, emb, empty, idx, table, scale, gen, high_t=args.high_t,
                              object_weight=args.object_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if args.save_every and (step + 1) % args.save_every == 0:
            save_lora(adapters, names, args.lora_rank)  # a checkpoint, so a run can be stopped early
        if step % args.log_every == 0 or step == args.lora_steps - 1:
            log.info("lora step %d/%d loss %.4f (avg %.4f) (%.0f s)", step, args.lora_steps, loss.item(), running,
                     time.time() - t0)
    save_lora(adapters, names, args.lora_rank)
    log.info("lora: %d params, %d steps in %.0f s, final avg loss %.4f; wrote %s", sum(p.numel() for p in params),
             args.lora_steps, time.time() - t0, running, PATHS.lora)
