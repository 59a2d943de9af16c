"""The shipped tiny VideoCrafter checkpoints as the library reads them (no ComfyUI).

The known answers (colour, direction, first frame, fps) need the text encoder, which is core's
CLIP: they run through the nodes in tests/host/test_videocrafter_tiny.py. Here: the files have
the released-conversion key layout, their U-Nets are detected as the variants they were trained
as, the sizes read from the weights rebuild the training configuration, every weight loads, and
the U-Net's output depends on the fps it is told (the condition the tiny model was trained on).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from videocrafter.configs import ResamplerConfig, detect_variant, unet_config_from_weights
from videocrafter.resampler import Resampler
from videocrafter.unet import VideoCrafterUNet

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "t2v": ROOT / "tiny" / "checkpoints" / "videocrafter_tiny_t2v.safetensors",
    "i2v": ROOT / "tiny" / "checkpoints" / "videocrafter_tiny_i2v.safetensors",
}
PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.model.", "embedder.model.visual.",
            "image_proj_model.")  # fmt: skip


def _unet(sd: dict) -> dict:
    return {k[len(PREFIXES[0]) :]: v.float() for k, v in sd.items() if k.startswith(PREFIXES[0])}


@pytest.mark.parametrize(("name", "variant"), [("t2v", "t2v-512-v2.0"), ("i2v", "i2v-512-v1.0")])
def test_tiny_checkpoint_loads_as_its_variant(name, variant):
    sd = load_file(FILES[name])
    assert {k.split(".")[0] for k in sd} <= {p.split(".")[0] for p in PREFIXES}
    unet_sd = _unet(sd)
    found = detect_variant(unet_sd)
    assert found.name == variant
    config = unet_config_from_weights({k: tuple(v.shape) for k, v in unet_sd.items()}, found.unet)
    assert (config.model_channels, config.channel_mult, config.context_dim) == (32, (1,), 16)
    unet = VideoCrafterUNet(config)
    unet.load_state_dict(unet_sd, strict=True)
    if name == "i2v":
        with safe_open(FILES[name], "pt") as f:
            meta = json.loads(f.metadata()["videocrafter.resampler"])
        resampler = Resampler(ResamplerConfig.from_dict(meta))
        resampler.load_state_dict({k[len("image_proj_model.") :]: v for k, v in sd.items()
                                   if k.startswith("image_proj_model.")}, strict=True)  # fmt: skip
    else:
        assert not any(k.startswith(("embedder.", "image_proj_model.")) for k in sd)


def test_tiny_unet_reads_the_fps():
    sd = load_file(FILES["t2v"])
    unet_sd = _unet(sd)
    variant = detect_variant(unet_sd)
    unet = VideoCrafterUNet(unet_config_from_weights({k: tuple(v.shape) for k, v in unet_sd.items()}, variant.unet))
    unet.load_state_dict(unet_sd)
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 8, 8, 8, generator=gen), torch.randn(1, 77, 16, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        a, b = unet(x, t, context, fps=8), unet(x, t, context, fps=24)
    assert (a - b).abs().max().item() > 1e-3


def test_tiny_files_stay_small():
    sizes = {name: path.stat().st_size for name, path in FILES.items()}
    assert sum(sizes.values()) < 11.5e6, sizes  # 10.9 MB: each file carries the VAE and the text tower
    shipped = {p.name: p.stat().st_size for p in (ROOT / "tiny").rglob("*.safetensors")}
    assert sum(shipped.values()) <= 40e6, shipped  # every tiny model together: the 40 MB budget
