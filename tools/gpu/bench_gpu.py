"""GPU benchmark, one command: this library against diffusers on CUDA, random weights, bf16.

    python tools/gpu/bench_gpu.py                 # everything below, prints a markdown table
    python tools/gpu/bench_gpu.py --only transformer --repeats 5
    python tools/gpu/bench_gpu.py --quick --device cpu   # tiny sizes: a smoke test without a GPU

- ``transformer``: one denoising step (CFG batch 2) of the 5B-shaped transformer
  (``VARIANTS["5b"]``: 42 layers, 3072 wide) at 49 frames x 480 x 720 (latent 13 x 60 x 90),
  bf16, ours vs diffusers' ``CogVideoXTransformer3DModel`` with the same config and weights
  (outputs compared first); median time and the peak memory of the call above the weights.
- ``fp8``: the same step with the block Linear weights stored in fp8 (``cogvideox.quant``,
  bf16 compute) vs bf16: time, weight memory and the output difference.
- ``vae``: decode of that latent with the released VAE architecture (random weights) in bf16,
  ours vs diffusers' ``AutoencoderKLCogVideoX``, untiled and tiled (each library's default tiles):
  peak memory above the weights and time. An out-of-memory case is reported as such.

Timing: CUDA events around each call after a warm-up, ours and diffusers interleaved.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cogvideox.configs import VARIANTS, VAEConfig  # noqa: E402

log = logging.getLogger("bench_gpu")
GIB = 1024**3


@dataclasses.dataclass
class Row:
    what: str
    metric: str
    ours: float | None
    ref: float | None
    unit: str

    def markdown(self) -> str:
        def fmt(v):
            return "OOM" if v is None else f"{v:.3g} {self.unit}"

        known = self.ours and self.ref and math.isfinite(self.ours) and math.isfinite(self.ref)
        ratio = f"**{self.ours / self.ref:.2f}x**" if known else "-"
        return f"| {self.what} | {self.metric} | {ratio} | {fmt(self.ours)} | {fmt(self.ref)} |"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_gib(device: torch.device, base: int) -> float:
    return (torch.cuda.max_memory_allocated(device) - base) / GIB if device.type == "cuda" else float("nan")


def timed(fns: list[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Median seconds per function: one warm-up each, then interleaved repeats."""
    import time

    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def randomize_(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Random weights drawn on the module's device (fast for 5B parameters); norm gains around 1."""
    gen = torch.Generator(next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen, device=tensor.device, dtype=torch.float32) * std
                tensor.copy_(noise + 1.0 if name.endswith(".weight") and tensor.ndim == 1 else noise)
    return module


def case(quick: bool):
    """(transformer config, latent (T, h, w))."""
    cfg = VARIANTS["5b"].transformer
    if quick:
        cfg = dataclasses.replace(cfg, num_layers=2, num_attention_heads=4, attention_head_dim=32,
                                  sample_height=16, sample_width=24, sample_frames=9)
        return cfg, (3, 16, 24)
    return cfg, (13, 60, 90)  # 49 frames at 480x720


def _diffusers_rope(cfg, t: int, h: int, w: int, device):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    gh, gw = h // cfg.patch_size, w // cfg.patch_size
    crops = get_resize_crop_region_for_grid((gh, gw), cfg.sample_width // 2, cfg.sample_height // 2)
    cos, sin = get_3d_rotary_pos_embed(cfg.attention_head_dim, crops, (gh, gw), t)
    return cos.to(device), sin.to(device)


def bench_transformer(args, device: torch.device, dtype: torch.dtype) -> list[Row]:
    from diffusers import CogVideoXTransformer3DModel

    from cogvideox.quant import store_weights, weight_bytes
    from cogvideox.transformer import CogVideoXTransformer

    cfg, (t, h, w) = case(args.quick)
    with torch.device(device):
        ref = CogVideoXTransformer3DModel(**cfg.to_dict()).to(dtype).eval()
        randomize_(ref, seed=0)
        ours = CogVideoXTransformer(cfg).to(dtype).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    gen = torch.Generator(device).manual_seed(1)
    x = torch.randn(2, 16, t, h, w, generator=gen, device=device, dtype=dtype)  # [uncond, cond]
    ctx = torch.randn(2, 226, cfg.text_embed_dim, generator=gen, device=device, dtype=dtype)
    timestep = torch.tensor([500, 500], device=device)
    rope = _diffusers_rope(cfg, t, h, w, device)
    x_ref = x.permute(0, 2, 1, 3, 4).contiguous()  # diffusers takes [B, F, C, H, W]

    def run_ours():
        return ours(x, timestep, ctx)

    def run_ref():
        return ref(hidden_states=x_ref, encoder_hidden_states=ctx, timestep=timestep,
                   image_rotary_emb=rope, return_dict=False)[0]

    what = f"5B transformer step, CFG batch 2, {dtype} (latent {t}x{h}x{w})"
    rows = []
    with torch.inference_mode():
        out_ours = run_ours().float()
        out_ref = run_ref().permute(0, 2, 1, 3, 4).float()
        diff = ((out_ours - out_ref).abs().max() / out_ref.abs().max()).item()
        peaks = []
        for fn in (run_ours, run_ref):
            base = _peak_reset(device)
            fn()
            peaks.append(_peak_gib(device, base))
        t_ours, t_ref = timed([run_ours, run_ref], args.repeats, device)
        rows += [Row(what, f"time (max rel. diff {diff:.1e})", t_ours, t_ref, "s"),
                 Row(what, "peak memory of the call above the weights", peaks[0], peaks[1], "GiB")]
        ref = out_ref = None  # free the reference before the fp8 case
        if "fp8" in args.sections:
            bytes_bf16 = weight_bytes(ours)
            store_weights(ours, "fp8", compute_dtype=dtype)
            out_fp8 = run_ours().float()
            fp8_diff = ((out_fp8 - out_ours).abs().max() / out_ours.abs().max()).item()
            (t_fp8,) = timed([run_ours], args.repeats, device)
            what8 = f"5B transformer step, block Linears stored in fp8 vs {dtype} (ours; latent {t}x{h}x{w})"
            rows += [Row(what8, f"time (fp8 / bf16; max rel. diff {fp8_diff:.1e})", t_fp8, t_ours, "s"),
                     Row(what8, "weight memory (fp8 / bf16)", weight_bytes(ours) / GIB, bytes_bf16 / GIB, "GiB")]
    return rows


def bench_vae(args, device: torch.device, dtype: torch.dtype) -> list[Row]:
    from diffusers import AutoencoderKLCogVideoX

    from cogvideox.vae import CogVideoXVAE

    _, (t, h, w) = case(args.quick)
    rows = []
    z = torch.randn(1, 16, t, h, w, generator=torch.Generator(device).manual_seed(2), device=device, dtype=dtype)
    results: dict[tuple[str, bool], tuple[float | None, float | None]] = {}
    for impl in ("ours", "diffusers"):
        with torch.device(device):
            model = (CogVideoXVAE(VAEConfig()) if impl == "ours" else AutoencoderKLCogVideoX()).to(dtype).eval()
        for tiled in (False, True):
            if impl == "ours":
                def run(model=model, tiled=tiled):
                    return model.decode(z, tile=True if tiled else None)
            else:
                if tiled:
                    model.enable_tiling()
                else:
                    model.disable_tiling()

                def run(model=model):
                    return model.decode(z).sample
            try:
                with torch.inference_mode():
                    run()  # warm-up
                    base = _peak_reset(device)
                    (seconds,) = timed([run], max(1, args.repeats // 2), device)
                    results[(impl, tiled)] = (_peak_gib(device, base), seconds)
            except torch.OutOfMemoryError:
                log.warning("VAE %s tiled=%s: out of memory", impl, tiled)
                results[(impl, tiled)] = (None, None)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del model
    for tiled in (False, True):
        (p_o, s_o), (p_r, s_r) = results[("ours", tiled)], results[("diffusers", tiled)]
        what = f"VAE decode {dtype}, latent {t}x{h}x{w}, {'tiled (default tiles)' if tiled else 'untiled'}"
        rows += [Row(what, "peak memory above the weights", p_o, p_r, "GiB"), Row(what, "time", s_o, s_r, "s")]
    return rows


SECTIONS = ("transformer", "fp8", "vae")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="a section (repeatable; default all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu with --quick for a smoke test")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args.sections = args.only or list(SECTIONS)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; run on a GPU machine (or --quick --device cpu for a smoke test)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    rows: list[Row] = []
    if "transformer" in args.sections or "fp8" in args.sections:
        rows += bench_transformer(args, device, dtype)
    if "vae" in args.sections:
        rows += bench_vae(args, device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"Command: `python tools/gpu/bench_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ")
    print(f"Device: {name}, torch {torch.__version__}; median of {args.repeats} interleaved call(s) after a warm-up.\n")
    print("| what | metric | ours / diffusers | ours | diffusers |\n|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
