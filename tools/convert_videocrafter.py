"""Convert a released VideoCrafter ``model.ckpt`` to the ``.safetensors`` the loader node reads.

The released checkpoints (VideoCrafter1 T2V 1024 / T2V 512 / I2V 512, VideoCrafter2) are
pickles. Run this once, offline, as a deliberate step: it unpickles with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code), keeps the
weights the nodes use under their upstream names and writes safetensors::

    .venv/bin/python tools/convert_videocrafter.py model.ckpt ComfyUI/models/checkpoints/videocrafter2.safetensors
    .venv/bin/python tools/convert_videocrafter.py model.ckpt out.safetensors --dtype fp16

Kept prefixes: ``model.diffusion_model.``, ``first_stage_model.``, ``cond_stage_model.model.``,
``embedder.model.visual.``, ``image_proj_model.``. The schedule buffers (``betas``,
``scale_arr``...) are dropped: the schedule follows the variant detected from the weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from videocrafter.configs import detect_variant  # noqa: E402

logger = logging.getLogger("convert_videocrafter")

PREFIXES = (
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.model.",
    "embedder.model.visual.",
    "image_proj_model.",
)
DTYPES = {"keep": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model's tensors from a loaded checkpoint (``state_dict``, a DeepSpeed ``module``, or flat)."""
    if "state_dict" in checkpoint:
        return checkpoint["state_dict"]
    if "module" in checkpoint:  # DeepSpeed: keys carry a 16-character "_forward_module." prefix
        return {k[16:]: v for k, v in checkpoint["module"].items()}
    return checkpoint


def convert(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    kept = {}
    for key, value in state_dict.items():
        if not key.startswith(PREFIXES) or not torch.is_tensor(value):
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        kept[key] = value.detach().contiguous().clone()  # safetensors refuses shared storage
    unet = [k[len(PREFIXES[0]) :] for k in kept if k.startswith(PREFIXES[0])]
    variant = detect_variant(unet)  # raises for anything that is not a VideoCrafter U-Net
    logger.info("detected %s: %d tensors kept of %d", variant.name, len(kept), len(state_dict))
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the released model.ckpt")
    parser.add_argument("output", type=Path, help="where to write the .safetensors file")
    parser.add_argument("--dtype", choices=list(DTYPES), default="keep", help="cast floating tensors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from safetensors.torch import save_file

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    tensors = convert(extract_state_dict(checkpoint), DTYPES[args.dtype])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.output), metadata={"format": "pt", "source": args.checkpoint.name})
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
