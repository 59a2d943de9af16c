"""GPU check: the core CogVideoX MODEL under ComfyUI's low-VRAM partial loading vs normal mode.

    .venv/bin/python tools/gpu/lowvram_check.py                    # shipped tiny model, every layer streamed
    .venv/bin/python tools/gpu/lowvram_check.py --random-layers 8 --keep-gb 2  # 5B-wide, partly streamed
    .venv/bin/python tools/gpu/lowvram_check.py --help

Runs the same core KSampler graph (the Model Loader's core MODEL, same seed and noise) in two fresh
processes of the real ComfyUI (``build/comfyui``, from ``make env``) on CUDA:

- ``normal``: ComfyUI's default memory management (the model loaded whole on the GPU);
- ``lowvram``: ``--lowvram --reserve-vram R`` so the memory manager loads the model only partly
  and streams the rest of the weights layer by layer (``comfy.ops`` ``comfy_cast_weights``).
  ``R`` defaults to the card's size minus ``--keep-gb``. ComfyUI 0.3.75 gives the weights what is
  free minus (0.8 GB + R), so the default (keep 0) leaves nothing and every layer is streamed;
  ``--random-layers 8 --keep-gb 2`` (8 blocks of 5B width, ~3.6 GB in fp32) loads a part of it
  (about 1 GB less the CUDA context) and streams the rest.

It prints, per mode, how many of the transformer's comfy.ops layers were streamed, the peak CUDA
memory and the time, then the PSNR of the decoded frames (tiny model) or of the latents (random
model, no VAE) of lowvram against normal. Target (issue 14): >= 40 dB. Exit status 1 below it,
2 when no CUDA device is there. The two modes run in separate processes because ``--lowvram``
is a process-wide ComfyUI setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

log = logging.getLogger("lowvram_check")
TARGET_DB = 40.0
PROMPT = "a red square moving right"


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _random_model(layers: int, dtype: torch.dtype):
    """A random-weight transformer 5B wide (48 heads x 64) with ``layers`` blocks, built from the
    comfy.ops classes the Model Loader uses, in a core MODEL patcher (load CUDA, offload CPU)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    from cogvideox_pack.cogvideox import configs, transformer
    from cogvideox_pack.nodes.core_model import CogVideoXCoreModel, add_sampling_checks

    cfg = configs.VARIANTS["5b"].transformer.replace(num_layers=layers, sample_height=30, sample_width=44)
    variant = dataclasses.replace(configs.VARIANTS["5b"], transformer=cfg)
    torch.manual_seed(0)
    net = transformer.CogVideoXTransformer(cfg, comfy.ops.disable_weight_init)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
    net = net.to(dtype).eval()
    patcher = comfy.model_patcher.ModelPatcher(
        CogVideoXCoreModel(net, variant), load_device=mm.get_torch_device(), offload_device=torch.device("cpu")
    )
    add_sampling_checks(patcher)
    gen = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 226, cfg.text_embed_dim, generator=gen), {}]]
    neg = [[torch.randn(1, 226, cfg.text_embed_dim, generator=gen), {}]]
    return patcher, pos, neg, torch.zeros(1, 16, 3, 30, 44)


def _tiny_model(dtype_name: str):
    from cogvideox_pack.nodes.loaders import CogVideoXModelLoader, CogVideoXT5Loader, CogVideoXVAELoader
    from cogvideox_pack.nodes.text import CogVideoXTextEncode

    clip = CogVideoXT5Loader.execute("cogvideox_tiny_t5.safetensors", "auto")[0]
    pos = CogVideoXTextEncode.execute(clip, PROMPT)[0]
    neg = CogVideoXTextEncode.execute(clip, "")[0]
    patcher = CogVideoXModelLoader.execute("cogvideox_tiny_t2v.safetensors", dtype_name)[2]
    vae = CogVideoXVAELoader.execute("cogvideox_tiny_vae.safetensors", "fp32")[0]
    return patcher, pos, neg, torch.zeros(1, 16, 3, 16, 16), vae  # the tiny model: 9 frames at 128x128


def child(args: argparse.Namespace) -> dict:
    """One mode in this process: sample, decode (tiny), save the result to ``args.out``."""
    from harness.comfy_inprocess import load_pack

    comfy_args = ("--lowvram", "--reserve-vram", str(args.reserve_vram)) if args.child == "lowvram" else ()
    load_pack(("--cpu",) if args.cpu_dry_run else comfy_args)  # --cpu and --lowvram exclude each other
    cuda = not args.cpu_dry_run
    import comfy.model_management as mm

    import nodes as comfy_nodes

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    vae = None
    if args.random_layers:
        patcher, pos, neg, latent = _random_model(args.random_layers, dtype)
    else:
        patcher, pos, neg, latent, vae = _tiny_model(args.dtype)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.inference_mode():
        out = comfy_nodes.KSampler().sample(
            patcher, 0, args.steps, 6.0, "euler", "simple", pos, neg, {"samples": latent}
        )[0]["samples"]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    net = patcher.model.diffusion_model
    layers = [m for m in net.modules() if hasattr(m, "comfy_cast_weights")]
    result = {
        "mode": args.child,
        "vram_state": mm.vram_state.name,
        "layers": len(layers),
        "streamed_layers": sum(bool(m.comfy_cast_weights) for m in layers),
        "model_lowvram": bool(getattr(patcher.model, "model_lowvram", False)),
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "seconds": seconds,
    }
    if vae is not None:
        from cogvideox_pack.nodes.vae import CogVideoXVAEDecode

        out = CogVideoXVAEDecode.execute(vae, {"samples": out}, "off", 256)[0]  # [F, H, W, 3] in 0..1
    save_file({"out": out.float().cpu().contiguous()}, str(args.out))
    return result


def _spawn(mode: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), "--steps", str(args.steps),
           "--dtype", args.dtype, "--reserve-vram", str(args.reserve_vram), "--random-layers", str(args.random_layers)]
    cmd += ["--cpu-dry-run"] if args.cpu_dry_run else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="weights and compute of the transformer (the loader's weight_dtype)")
    parser.add_argument("--random-layers", type=int, default=0,
                        help="instead of the tiny model: a random 5B-wide transformer with this many blocks")
    parser.add_argument("--keep-gb", type=float, default=0.0,
                        help="lowvram: --reserve-vram = card size - this; ComfyUI then gives the weights about "
                             "this - 0.8 GB (0: every layer streamed)")
    parser.add_argument("--reserve-vram", type=float, default=None, help="lowvram: --reserve-vram in GB (overrides)")
    parser.add_argument("--timeout", type=int, default=540, help="seconds per mode")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="smoke test on the CPU (both modes run there, nothing is streamed): the script works")
    parser.add_argument("--child", choices=["normal", "lowvram"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.cpu_dry_run:
        args.reserve_vram = 0.0 if args.reserve_vram is None else args.reserve_vram
    elif not torch.cuda.is_available():
        log.error("no CUDA device: this check needs a GPU (ComfyUI never partially loads onto the CPU)")
        return 2
    elif args.reserve_vram is None:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        args.reserve_vram = max(0.0, round(total - args.keep_gb, 2))
    if args.child:
        print(json.dumps(child(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = {mode: _spawn(mode, args, Path(tmp) / f"{mode}.safetensors") for mode in ("normal", "lowvram")}
        normal, low = (load_file(str(Path(tmp) / f"{m}.safetensors"))["out"] for m in ("normal", "lowvram"))
    peak = 1.0 if not args.random_layers else float(normal.max() - normal.min())
    what = "frames" if not args.random_layers else "latents"
    db = psnr(low, normal, peak)
    for run in runs.values():
        print(json.dumps(run))
    device = "CPU dry run" if args.cpu_dry_run else torch.cuda.get_device_name(0)
    print(f"{device}: lowvram vs normal {what}: {db:.1f} dB "
          f"({runs['lowvram']['streamed_layers']}/{runs['lowvram']['layers']} layers streamed; "
          f"--reserve-vram {args.reserve_vram}); target >= {TARGET_DB} dB")
    if runs["lowvram"]["streamed_layers"] == 0:
        log.warning("nothing was streamed in lowvram mode: lower --keep-gb or raise --reserve-vram")
    return 0 if db >= TARGET_DB else 1


if __name__ == "__main__":
    sys.exit(main())
