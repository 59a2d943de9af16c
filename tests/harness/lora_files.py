"""LoRA files for the host tests, written into ``models/loras/`` before the host starts.

Made for the shipped tiny text-to-video model (its Linear shapes are read from the file):

- ``test_lora_peft.safetensors``: diffusers/PEFT keys, random factors, every Linear (a visible effect);
- ``test_lora_sd.safetensors``: Stable Diffusion kohya keys (no CogVideoX layer);
- ``test_lora_wrong_variant.safetensors``: CogVideoX keys with another width (a "2B LoRA on 5B");
- ``test_lora_truncated.safetensors``: the PEFT file cut in half;
- ``test_lora_pickle.pt``: a pickle that would write ``PICKLE_MARKER`` if it were ever unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

from cogvideox.loading import load_transformer
from cogvideox.lora import linear_targets

ROOT = Path(__file__).resolve().parents[2]
TINY_T2V = ROOT / "tiny" / "diffusion_models" / "cogvideox_tiny_t2v.safetensors"
PEFT, SD, WRONG, TRUNCATED, PICKLE = (
    "test_lora_peft.safetensors",
    "test_lora_sd.safetensors",
    "test_lora_wrong_variant.safetensors",
    "test_lora_truncated.safetensors",
    "test_lora_pickle.pt",
)
PICKLE_MARKER = "cogvideox_lora_pickle_was_loaded"


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (Path.touch, (Path(self.marker),))


def peft_lora(targets: dict, rank: int = 4, seed: int = 0, std: float = 0.3, widen: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (o, i) in sorted(targets.items()):
        out[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, i + widen, generator=g) * std / i**0.5
        out[f"transformer.{name}.lora_B.weight"] = torch.randn(o + widen, rank, generator=g) * std
    return out


def generate(models_dir: Path) -> None:
    folder = models_dir / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / PICKLE).exists():
        return
    model, _ = load_transformer(TINY_T2V, dtype=torch.float32)
    targets = linear_targets(model)
    save_file(peft_lora(targets), folder / PEFT)
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
        },
        folder / SD,
    )
    blocks = {k: v for k, v in targets.items() if k.startswith("transformer_blocks.")}
    save_file(peft_lora(blocks, widen=16), folder / WRONG)
    data = (folder / PEFT).read_bytes()
    (folder / TRUNCATED).write_bytes(data[: len(data) // 2])
    (folder / PICKLE).write_bytes(pickle.dumps(_Payload(str(models_dir / PICKLE_MARKER))))
