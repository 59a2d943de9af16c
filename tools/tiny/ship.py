"""Copy trained tiny CogVideoX files from a training folder into ``tiny/``, stored in fp16.

    .venv/bin/python tools/tiny/ship.py build/ship                 # every model file found there
    .venv/bin/python tools/tiny/ship.py build/ship --dtype float32 # keep fp32

Training writes fp32 files (``tools/tiny/train.py --out DIR``) so that ``--resume`` continues
from exact weights; the shipped copies store their floating-point tensors in fp16 (half the
bytes: the issue's 40 MB budget for everything in ``tiny/``). The loaders cast them to the
compute dtype the caller or the node asks for (fp32 on CPU). Tensors are rounded once, the
metadata (config, variant, ``latent_rgb``, the LoRA's adapter metadata) is kept as it is.
Prints each file's size and the largest change the rounding makes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("diffusion_models", "vae", "loras")  # text_encoders/: the T5 is never retrained
log = logging.getLogger("ship")


def convert(src: Path, dst: Path, dtype: torch.dtype) -> float:
    """Write ``src`` to ``dst`` with floating-point tensors in ``dtype``; the largest relative change."""
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    worst = 0.0
    out = {}
    for key, tensor in tensors.items():
        if tensor.is_floating_point():
            cast = tensor.to(dtype)
            scale = float(tensor.abs().max()) or 1.0
            worst = max(worst, float((cast.float() - tensor.float()).abs().max()) / scale)
            tensor = cast
        out[key] = tensor.contiguous()
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dst), metadata=metadata)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a train.py --out folder")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--to", type=Path, default=ROOT / "tiny")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dtype = getattr(torch, args.dtype)
    found = [p for folder in FOLDERS for p in sorted((args.source / folder).glob("*.safetensors"))]
    if not found:
        log.error("no model files under %s/{%s}", args.source, ",".join(FOLDERS))
        return 1
    for src in found:
        dst = args.to / src.parent.name / src.name
        worst = convert(src, dst, dtype)
        log.info("%s -> %s: %.2f MB (largest change %.1e of a tensor's max)", src, dst,
                 dst.stat().st_size / 1e6, worst)
    total = sum(p.stat().st_size for p in args.to.rglob("*.safetensors"))
    sys.stdout.write(f"{args.to}: {total / 1e6:.1f} MB of safetensors in all\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
