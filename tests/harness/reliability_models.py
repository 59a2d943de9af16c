"""Small random-weight model files (and deliberately bad ones) for the reliability tests.

Everything is written at test time into a ComfyUI ``models/`` folder with the same layout
as the tiny trained model (``diffusion_models/``, ``vae/``, ``text_encoders/``), under names
starting with ``rel_`` so they never collide with other tests' files. ComfyUI rescans its
model folders on every ``/object_info`` and prompt validation, so files written after the
server started are visible to it.

``ensure_models(models_dir)`` writes the good files (idempotent, a few seconds);
the bad files each have their own function, so a test writes only what it uses.
"""

from __future__ import annotations

import builtins
import json
import logging
import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

from cogvideox.configs import TransformerConfig, VAEConfig
from cogvideox.loading import save_safetensors
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae import CogVideoXVAE

log = logging.getLogger(__name__)

T2V = "rel_t2v.safetensors"
I2V = "rel_i2v.safetensors"
I2V_LEARNED = "rel_i2v_learned.safetensors"  # learned positions, like 5B-I2V: fits only 9 frames at 64x64
T2V_INF = "rel_t2v_inf.safetensors"  # an inf weight: the first step's output is not finite
FUN_INP = "rel_fun_inp.safetensors"  # CogVideoX-Fun InP layout: 33 input channels
FUN_CONTROL = "rel_fun_control.safetensors"  # CogVideoX-Fun Control layout: 32 channels, no learned positions
VAE = "rel_vae.safetensors"
T5 = "rel_t5.safetensors"

SIZE = 64  # pixels; the trained size of the tiny models
FRAMES = 9

_TRANSFORMER = TransformerConfig(
    num_attention_heads=4,
    attention_head_dim=16,
    time_embed_dim=64,
    text_embed_dim=32,
    num_layers=2,
    sample_height=SIZE // 8,
    sample_width=SIZE // 8,
    sample_frames=FRAMES,
    use_rotary_positional_embeddings=True,
)
_VARIANT = {
    "name": "rel-t2v",
    "scaling_factor": 1.0,
    "scheduler": "dpm",
    "snr_shift_scale": 1.0,
    "fps": 8,
    "frames": FRAMES,
    "width": SIZE,
    "height": SIZE,
}


def _transformer(
    path: Path, cfg: TransformerConfig, name: str, seed: int, poison: bool = False, fun: str | None = None
) -> None:
    torch.manual_seed(seed)
    model = CogVideoXTransformer(cfg)
    if poison:
        with torch.no_grad():
            model.proj_out.weight[0, 0] = float("inf")
    variant = {**_VARIANT, "name": name, **({"fun": fun, "scheduler": "ddim"} if fun else {})}
    save_safetensors(model, path, cfg, extra={"variant": variant})


def _t5(path: Path) -> None:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(3)
    cfg = T5Config(
        vocab_size=32128, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        is_gated_act=True, dense_act_fn="gelu_new", feed_forward_proj="gated-gelu",
    )
    model = T5EncoderModel(cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(state, str(path), metadata={"config": json.dumps(cfg.to_dict())})


def ensure_models(models_dir: Path) -> None:
    """The good tiny models: T2V, I2V (RoPE), I2V with learned positions, an inf-poisoned T2V, VAE, T5."""
    dm, vae, te = (models_dir / f for f in ("diffusion_models", "vae", "text_encoders"))
    for folder in (dm, vae, te):
        folder.mkdir(parents=True, exist_ok=True)
    jobs = {
        dm / T2V: lambda p: _transformer(p, _TRANSFORMER, "rel-t2v", 0),
        dm / T2V_INF: lambda p: _transformer(p, _TRANSFORMER, "rel-t2v-inf", 0, poison=True),
        dm / I2V: lambda p: _transformer(p, _TRANSFORMER.replace(in_channels=32), "rel-i2v", 1),
        dm / I2V_LEARNED: lambda p: _transformer(
            p, _TRANSFORMER.replace(in_channels=32, use_learned_positional_embeddings=True), "rel-i2v-learned", 2
        ),
        dm / FUN_INP: lambda p: _transformer(
            p, _TRANSFORMER.replace(in_channels=33), "rel-fun-inp", 5, fun="inpaint"
        ),
        dm / FUN_CONTROL: lambda p: _transformer(
            p, _TRANSFORMER.replace(in_channels=32), "rel-fun-control", 6, fun="control"
        ),
        vae / VAE: _vae,
        te / T5: _t5,
    }
    for path, make in jobs.items():
        if not path.exists():
            tmp = path.with_name(".tmp-" + path.name)
            make(tmp)
            tmp.rename(path)  # ComfyUI never lists a half-written file under its final name


def _vae(path: Path) -> None:
    torch.manual_seed(4)
    cfg = VAEConfig(block_out_channels=(16, 32, 32, 64), norm_num_groups=8, layers_per_block=1,
                    sample_height=SIZE, sample_width=SIZE)
    save_safetensors(CogVideoXVAE(cfg), path, cfg)


# ------------------------------------------------------------------------ bad files
def sd_vae_file(path: Path) -> None:
    """A Stable Diffusion 1.5 style 2D VAE state dict (ldm key names, small random tensors)."""
    keys = {
        "encoder.conv_in.weight": (8, 3, 3, 3),
        "encoder.conv_in.bias": (8,),
        "encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3),
        "encoder.down.0.block.0.norm1.weight": (8,),
        "encoder.conv_out.weight": (8, 8, 3, 3),
        "decoder.conv_in.weight": (8, 4, 3, 3),
        "decoder.up.0.block.0.conv1.weight": (8, 8, 3, 3),
        "decoder.conv_out.weight": (3, 8, 3, 3),
        "quant_conv.weight": (8, 8, 1, 1),
        "post_quant_conv.weight": (4, 4, 1, 1),
    }
    save_file({k: torch.randn(s) for k, s in keys.items()}, str(path))


def sd_unet_file(path: Path) -> None:
    """An SD 1.5 style image U-Net checkpoint (ldm key names, small random tensors)."""
    keys = {
        "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": (8,),
        "model.diffusion_model.time_embed.0.weight": (32, 8),
        "model.diffusion_model.middle_block.0.in_layers.2.weight": (8, 8, 3, 3),
        "model.diffusion_model.out.2.weight": (4, 8, 3, 3),
    }
    save_file({k: torch.randn(s) for k, s in keys.items()}, str(path))


def truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> None:
    """The first ``keep`` of ``src``: a download cut short (header intact, data missing)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


class _Booby:
    """Unpickling this creates ``marker``: proof that a loader ran pickle code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def pickle_file(path: Path, marker: Path) -> None:
    """A ``.pt`` whose unpickling writes ``marker`` (it must never appear)."""
    with path.open("wb") as fh:
        pickle.dump({"state_dict": _Booby(str(marker))}, fh)


def clip_l_file(path: Path) -> None:
    """Random fp16 weights in the Hugging Face CLIPTextModel layout at full CLIP-L size (~250 MB)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         projection_dim=768)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in CLIPTextModel(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(5)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).reshape(shape)
        else:
            state[key] = (torch.randn(shape, generator=gen) * 0.02).to(torch.float16)
    save_file(state, str(path))
