"""Side-by-side benchmark of this library against diffusers (the reference), CPU, float32.

One run of this script measures both implementations on the same random-weight configurations
and prints a markdown table of ratios (ours / diffusers) with the absolute figures beside them:

- ``transformer``: one denoising step (CFG on: batch 2) of a medium 5B-shaped transformer;
- ``vae``: decode with the real-size VAE (released architecture, random weights), untiled and
  tiled with the same explicit tile size: time and peak memory;
- ``pipeline``: a whole text-to-video run (10 steps + decode) of a tiny-ish model;
- ``cache``: step caching (calibrated skip plan) vs the uncached run: speedup and PSNR of the frames;
- ``core``: the core MODEL (nodes/core_model.py) in the real ComfyUI, loaded into this process:
  core KSampler's sampling vs the pack's sampler (same solver, steps and noise; the ratio column is
  core / pack), and the peak memory of a 3x-long video in core context windows vs the trained
  length (ratio 3x / 1x, and 3x without windows for contrast; each in a fresh child process) on a
  random-weight CogVideoX-shaped model at a real 60x90 latent, where a window's activations dominate.
- ``ops`` (needs the scratch ComfyUI in build/comfyui): the transformer step built from ComfyUI's
  ``comfy.ops.disable_weight_init`` layers (what the Model Loader uses) against ``torch.nn``
  layers, with nothing offloaded, and with every layer streamed through a ModelPatcher partial
  load (``comfy_cast_weights``: each layer's own forward, no oneDNN fast path); the
  "diffusers" column is the ``torch.nn`` model there;
- ``corevae`` (same): core VAE Decode on the loader's core VAE output against CogVideoX VAE
  Decode, real-size VAE; the "diffusers" column is CogVideoX VAE Decode there.
- ``lora``: the transformer step with a rank-64 LoRA on every Linear patched in at load (as the
  CogVideoX LoRA node's ModelPatcher patches do: new weight tensors) vs the same model without.
- ``videocrafter``: the VideoCrafter U-Net step vs the reference ``lvdm`` (``tools/bench_videocrafter.py``;
  skipped unless a VideoCrafter checkout is found).

Timing: ``torch.set_num_threads(2)``, one warm-up call, then the median of ``--repeats`` calls,
ours and diffusers interleaved call by call so that load from other processes hits both alike.

Peak memory (VAE): every VAE case runs in a fresh child process that builds the model and the
input, then resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` <- 5, which sets VmHWM
to the current RSS), decodes once and reports ``VmHWM - VmRSS before``: the extra resident
memory the decode needed, measured the same way for both libraries, with no allocator state
left over from an earlier run. The time in those rows is that single (cold) decode.

Usage: ``python tools/benchmark.py [--quick] [--only SECTION]`` (a section named above).
The full run writes ``artifacts/benchmark.md`` (``--out`` to change; ``--out ''`` to skip).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cogvideox.configs import VARIANTS, TransformerConfig, VAEConfig  # noqa: E402
from cogvideox.transformer import CogVideoXTransformer  # noqa: E402
from cogvideox.vae import CogVideoXVAE, TileConfig  # noqa: E402

log = logging.getLogger("benchmark")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))  # 1 on a busy machine


# ----------------------------------------------------------------------------- helpers
def randomize(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Deterministic random weights by parameter name (same names -> same values in both libraries)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen) * std
            if name.endswith(".weight") and tensor.ndim == 1:
                noise += 1.0  # norm gains around 1
            tensor.copy_(noise)
    return module


def timed_pair(ours: Callable[[], object], ref: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``ref``: one warm-up each, then interleaved repeats."""
    ours()
    ref()
    t_ours, t_ref = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (ref, t_ref)):
            gc.collect()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(t_ours), statistics.median(t_ref)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> float:
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float().clamp(-1, 1) - b.float().clamp(-1, 1)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


@dataclasses.dataclass
class Row:
    what: str
    metric: str
    ours: float
    ref: float | None
    unit: str
    target: str = ""

    def ratio(self) -> float | None:
        return None if not self.ref else self.ours / self.ref

    def markdown(self) -> str:
        ratio = self.ratio()
        ref = "-" if self.ref is None else f"{_num(self.ref)} {self.unit}"
        r = "-" if ratio is None else f"**{ratio:.2f}x**"
        return f"| {self.what} | {self.metric} | {r} | {_num(self.ours)} {self.unit} | {ref} | {self.target} |"


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


# ----------------------------------------------------------------------------- transformer
def transformer_config(quick: bool) -> tuple[TransformerConfig, tuple[int, int, int]]:
    """5B-shaped blocks scaled down: 8 heads x 64, RoPE, T5-wide text; latent (T, h, w)."""
    if quick:
        latent = (3, 16, 24)
        layers = 2
    else:
        latent = (13, 30, 44)  # 49 frames at 240x352 px (352: the nearest width with an even latent)
        layers = 4
    cfg = TransformerConfig(
        num_attention_heads=8,
        attention_head_dim=64,
        num_layers=layers,
        use_rotary_positional_embeddings=True,
        sample_height=latent[1],
        sample_width=latent[2],
        sample_frames=(latent[0] - 1) * 4 + 1,
    )
    return cfg, latent


def _diffusers_rope(cfg: TransformerConfig, t: int, h: int, w: int):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    gh, gw = h // cfg.patch_size, w // cfg.patch_size
    crops = get_resize_crop_region_for_grid((gh, gw), cfg.sample_width // 2, cfg.sample_height // 2)
    return get_3d_rotary_pos_embed(cfg.attention_head_dim, crops, (gh, gw), t)


def bench_transformer(quick: bool, repeats: int) -> list[Row]:
    from diffusers import CogVideoXTransformer3DModel

    cfg, (t, h, w) = transformer_config(quick)
    ref = randomize(CogVideoXTransformer3DModel(**cfg.to_dict()).eval(), seed=0)
    ours = CogVideoXTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, t, h, w, generator=gen)  # [uncond, cond]
    ctx = torch.randn(2, 226, cfg.text_embed_dim, generator=gen)
    timestep = torch.tensor([500, 500])
    rope = _diffusers_rope(cfg, t, h, w)  # the reference pipeline builds it once per run
    x_ref = x.permute(0, 2, 1, 3, 4).contiguous()  # diffusers takes [B, F, C, H, W]

    def run_ours():
        return ours(x, timestep, ctx)

    def run_ref():
        return ref(
            hidden_states=x_ref, encoder_hidden_states=ctx, timestep=timestep, image_rotary_emb=rope, return_dict=False
        )[0]

    with torch.inference_mode():
        diff = (run_ours() - run_ref().permute(0, 2, 1, 3, 4)).abs().max().item()
        t_ours, t_ref = timed_pair(run_ours, run_ref, repeats)
    log.info("transformer max abs diff vs diffusers: %.3g", diff)
    what = f"transformer step, CFG batch 2 ({cfg.num_layers} layers, {cfg.inner_dim} wide, latent {t}x{h}x{w})"
    return [Row(what, "time", t_ours, t_ref, "s", "<= 0.9x")]


# ----------------------------------------------------------------------------- VAE
def vae_case(quick: bool) -> tuple[tuple[int, ...], TileConfig]:
    """Latent shape and the explicit tile size (pixels) used by both libraries."""
    if quick:
        return (1, 16, 2, 8, 12), TileConfig(48, 64, 1 / 6, 1 / 5)
    return (1, 16, 5, 15, 22), TileConfig(64, 96, 1 / 6, 1 / 5)  # 17 frames at 120x176 px


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def vae_child(impl: str, tiled: bool, quick: bool) -> dict:
    """Runs in a fresh process: one decode, its time and the peak RSS it added (MiB)."""
    torch.set_num_threads(THREADS)
    shape, tile = vae_case(quick)
    torch.manual_seed(0)
    ours = CogVideoXVAE(VAEConfig()).eval()  # the released architecture, default (random) init
    if impl == "diffusers":
        from diffusers import AutoencoderKLCogVideoX

        model = AutoencoderKLCogVideoX().eval()
        model.load_state_dict(ours.state_dict(), strict=True)
        del ours
        if tiled:
            model.enable_tiling(
                tile_sample_min_height=tile.tile_sample_min_height,
                tile_sample_min_width=tile.tile_sample_min_width,
                tile_overlap_factor_height=tile.tile_overlap_factor_height,
                tile_overlap_factor_width=tile.tile_overlap_factor_width,
            )

        def run():
            return model.decode(z).sample
    else:
        model = ours

        def run():
            return model.decode(z, tile=tile if tiled else None)

    z = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    gc.collect()
    with torch.inference_mode():
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
        peak = _status_kib("VmHWM")
    return {
        "seconds": seconds,
        "peak_mib": (peak - before) / 1024,
        "shape": list(out.shape),
        "finite": bool(torch.isfinite(out).all()),
        "checksum": float(out.double().abs().mean()),
    }


def _spawn_vae(impl: str, tiled: bool, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--vae-child", impl, "--tiled" if tiled else "--untiled"]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"VAE child {impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_vae(quick: bool) -> list[Row]:
    shape, tile = vae_case(quick)
    rows = []
    for tiled in (False, True):
        ours = _spawn_vae("ours", tiled, quick)
        ref = _spawn_vae("diffusers", tiled, quick)
        log.info("VAE tiled=%s ours %s diffusers %s", tiled, ours, ref)
        mode = f"tiled {tile.tile_sample_min_height}x{tile.tile_sample_min_width} px" if tiled else "untiled"
        what = f"VAE decode, real size, latent {'x'.join(map(str, shape[2:]))} -> {ours['shape'][2]} frames, {mode}"
        target = "<= 0.5x" if tiled else "<= 1.0x"
        rows.append(Row(what, "peak RSS added", ours["peak_mib"], ref["peak_mib"], "MiB", target))
        rows.append(Row(what, "time (1 cold run)", ours["seconds"], ref["seconds"], "s"))
    return rows


# ----------------------------------------------------------------------------- ComfyUI paths
def _comfy_pack():
    """Import ComfyUI (build/comfyui, CPU) and this pack as ComfyUI loads it; returns the pack."""
    import importlib.util

    comfy_dir = ROOT / "build" / "comfyui"
    if not (comfy_dir / "comfy" / "ops.py").is_file():
        raise SystemExit(f"no ComfyUI at {comfy_dir}: run `make env` (tools/setup_env.sh) first")
    if importlib.util.find_spec("torchvision") is None:  # as the host tests run ComfyUI
        sys.path.insert(0, str(ROOT / "tests" / "harness" / "torchvision_standin"))
    sys.path.insert(0, str(comfy_dir))  # before the repo root: ComfyUI's nodes.py, not our nodes/
    argv, sys.argv = sys.argv, ["main.py", "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.ops  # noqa: F401 - parses the CPU command line once
    finally:
        sys.argv = argv
    name = "cogvideox_pack_bench"
    if name not in sys.modules:
        init = ROOT / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def bench_ops(quick: bool, repeats: int) -> list[Row]:
    _comfy_pack()
    import comfy.model_patcher
    import comfy.ops

    cfg, (t, h, w) = transformer_config(quick)
    plain = randomize(CogVideoXTransformer(cfg).eval(), seed=0)
    ops = CogVideoXTransformer(cfg, operations=comfy.ops.disable_weight_init).eval()
    ops.load_state_dict(plain.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, t, h, w, generator=gen)
    ctx = torch.randn(2, 226, cfg.text_embed_dim, generator=gen)
    timestep = torch.tensor([500, 500])
    what = f"transformer step, CFG batch 2 ({cfg.num_layers} layers, {cfg.inner_dim} wide, latent {t}x{h}x{w})"
    rows = []
    with torch.inference_mode():
        diff = (ops(x, timestep, ctx) - plain(x, timestep, ctx)).abs().max().item()
        t_ops, t_plain = timed_pair(lambda: ops(x, timestep, ctx), lambda: plain(x, timestep, ctx), repeats)
    log.info("comfy.ops vs torch.nn max abs diff: %.3g", diff)
    rows.append(Row(f"{what}: comfy.ops layers vs torch.nn, all resident", "time", t_ops, t_plain, "s", "<= 1.05x"))
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(ops, load_device=cpu, offload_device=cpu)
    patcher.patch_model(cpu, lowvram_model_memory=1)  # every layer streamed (cast in its forward)
    try:
        with torch.inference_mode():
            diff = (ops(x, timestep, ctx) - plain(x, timestep, ctx)).abs().max().item()
            t_low, t_plain = timed_pair(lambda: ops(x, timestep, ctx), lambda: plain(x, timestep, ctx), repeats)
    finally:
        patcher.unpatch_model(cpu)
    log.info("streamed vs torch.nn max abs diff: %.3g", diff)
    rows.append(Row(f"{what}: every layer streamed (partial load) vs torch.nn", "time", t_low, t_plain, "s"))
    return rows


def bench_core_vae(quick: bool, repeats: int) -> list[Row]:
    pack = _comfy_pack()
    import comfy.model_patcher

    import nodes as core

    common = sys.modules[f"{pack.__name__}.nodes.common"]
    core_vae = sys.modules[f"{pack.__name__}.nodes.core_vae"]
    vae_nodes = sys.modules[f"{pack.__name__}.nodes.vae"]
    shape, _ = vae_case(quick)
    torch.manual_seed(0)
    module = CogVideoXVAE(VAEConfig()).eval()
    cpu = torch.device("cpu")
    ours = common.CogVideoXVAE(comfy.model_patcher.ModelPatcher(module, load_device=cpu, offload_device=cpu))
    wrapped = core_vae.core_vae(ours)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(2))

    def run_core():
        return core.VAEDecode().decode(wrapped, {"samples": z})[0]

    def run_ours():
        return vae_nodes.CogVideoXVAEDecode.execute(ours, {"samples": z}, "auto", 256)[0]

    diff = (run_core() - run_ours()).abs().max().item()
    t_core, t_ours = timed_pair(run_core, run_ours, repeats)
    log.info("core VAE Decode vs CogVideoX VAE Decode max abs diff: %.3g", diff)
    what = f"core VAE Decode vs CogVideoX VAE Decode, real-size VAE, latent {'x'.join(map(str, shape[2:]))}"
    return [Row(what, "time", t_core, t_ours, "s", "~1.0x (same decode)")]


# ----------------------------------------------------------------------------- pipeline
def tiny_ish(quick: bool):
    """A tiny-ish 5B-shaped model: transformer config, VAE config, latent (T, h, w)."""
    tcfg = TransformerConfig(
        num_attention_heads=4,
        attention_head_dim=64,
        num_layers=2,
        use_rotary_positional_embeddings=True,
        sample_height=16,
        sample_width=24,
        sample_frames=17,
    )
    vcfg = VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=8)
    latent = (2, 8, 12) if quick else (5, 16, 24)
    return tcfg, vcfg, latent


def _reference_scheduler(variant):
    from diffusers import CogVideoXDPMScheduler

    return CogVideoXDPMScheduler(
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=variant.snr_shift_scale,
        clip_sample=False,
    )


def bench_pipeline(quick: bool, repeats: int, steps: int = 10) -> list[Row]:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel

    from cogvideox.pipeline import sample

    tcfg, vcfg, (t, h, w) = tiny_ish(quick)
    variant = dataclasses.replace(VARIANTS["5b"], transformer=tcfg)
    ref_tf = randomize(CogVideoXTransformer3DModel(**tcfg.to_dict()).eval(), seed=0)
    ours_tf = CogVideoXTransformer(tcfg).eval()
    ours_tf.load_state_dict(ref_tf.state_dict(), strict=True)
    torch.manual_seed(0)
    ours_vae = CogVideoXVAE(vcfg).eval()
    ref_vae = AutoencoderKLCogVideoX(**{**vcfg.to_dict(), "scaling_factor": variant.scaling_factor}).eval()
    ref_vae.load_state_dict(ours_vae.state_dict(), strict=True)
    pipe = CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=ref_vae, transformer=ref_tf, scheduler=_reference_scheduler(variant)
    )
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(5)
    pos = torch.randn(1, 226, tcfg.text_embed_dim, generator=gen)
    neg = torch.randn(1, 226, tcfg.text_embed_dim, generator=gen)
    frames = (t - 1) * 4 + 1

    def run_ours():
        lat = sample(ours_tf, variant, torch.zeros(1, 16, t, h, w), pos, neg, steps=steps, cfg=6.0, seed=0)
        return (ours_vae.decode(lat).clamp(-1, 1) + 1) / 2  # [B, 3, F, H, W] in [0, 1]

    def run_ref():
        return pipe(
            height=h * 8,
            width=w * 8,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=6.0,
            prompt_embeds=pos,
            negative_prompt_embeds=neg,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).frames

    with torch.inference_mode():
        t_ours, t_ref = timed_pair(run_ours, run_ref, repeats)
    what = f"text-to-video run, {steps} steps + decode (tiny-ish, latent {t}x{h}x{w}, {frames} frames)"
    return [Row(what, "time", t_ours, t_ref, "s", "<= 0.9x")]


# ----------------------------------------------------------------------------- core MODEL
def _load_comfy():
    """The real ComfyUI (build/comfyui, CPU) and the pack, imported into this process."""
    sys.path.insert(0, str(ROOT / "tests"))
    from harness.comfy_inprocess import load_pack

    return load_pack()


def bench_core(quick: bool, repeats: int, steps: int = 10) -> list[Row]:
    _load_comfy()
    import comfy.model_patcher
    import comfy.sample
    from cogvideox_pack.cogvideox import configs, pipeline, transformer
    from cogvideox_pack.nodes.core_model import CogVideoXCoreModel

    tcfg, _, (t, h, w) = tiny_ish(quick)
    variant = dataclasses.replace(configs.VARIANTS["5b"], transformer=tcfg)
    net = randomize(transformer.CogVideoXTransformer(tcfg).eval(), seed=0)
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(CogVideoXCoreModel(net, variant), cpu, cpu)
    gen = torch.Generator().manual_seed(5)
    pos = torch.randn(1, 226, tcfg.text_embed_dim, generator=gen)
    neg = torch.randn(1, 226, tcfg.text_embed_dim, generator=gen)
    latent = torch.zeros(1, 16, t, h, w)
    noise = comfy.sample.prepare_noise(latent, 0)
    out = {}

    def run_core():
        out["core"] = comfy.sample.sample(
            patcher, noise, steps, 6.0, "euler", "simple", [[pos, {}]], [[neg, {}]], latent, seed=0,
            disable_pbar=True,
        )

    def run_pack():
        out["pack"] = pipeline.sample(
            net, variant, latent, pos, neg, steps=steps, cfg=6.0, sampler="euler", noise=noise
        )

    with torch.inference_mode():
        t_core, t_pack = timed_pair(run_core, run_pack, repeats)
    err = (out["core"] - out["pack"]).abs().max().item()
    log.info("core vs pack euler: latent max difference %.2e", err)
    what = (
        f"core KSampler (euler+simple) on the core MODEL / pack sampler (euler), {steps} steps, CFG, "
        f"tiny-ish latent {t}x{h}x{w} (latents within {err:.0e})"
    )
    rows = [Row(what, "time", t_core, t_pack, "s", "<= 1.05x")]
    one, three = _spawn_core(1, quick), _spawn_core(3, quick)
    bare = _spawn_core(-3, quick)  # the same 3x video without windows: what the windows save
    log.info("long video: 1x %s, 3x %s, 3x without windows %s", one, three, bare)
    what = (
        f"long video, core KSampler + ContextWindowsManual (dim 2, windows of {one['frames']} latent frames, "
        f"overlap 1): {three['frames']} vs {one['frames']} latent frames at {one['size']}, random-weight "
        f"{one['model']}, CFG, {one['steps']} steps"
    )
    rows.append(Row(what, "peak RSS added", three["peak_mib"], one["peak_mib"], "MiB", "<= 1.3x"))
    rows.append(Row(what, "time (1 run)", three["seconds"], one["seconds"], "s"))
    what = f"the same {bare['frames']} latent frames WITHOUT context windows / the trained {one['frames']}"
    rows.append(Row(what, "peak RSS added", bare["peak_mib"], one["peak_mib"], "MiB"))
    return rows


def long_video_case(quick: bool) -> tuple[TransformerConfig, int, tuple[int, int]]:
    """The memory case: a random-weight CogVideoX-shaped transformer (RoPE, no learned positions)
    with few thin layers, so that one step at a real latent size (60x90: 480x720 px) takes seconds
    on a CPU; the trained (window) length in latent frames; the latent's (h, w)."""
    h, w = (30, 44) if quick else (60, 90)
    window = 2 if quick else 3
    cfg = TransformerConfig(
        num_attention_heads=4, attention_head_dim=64, num_layers=2, time_embed_dim=64, text_embed_dim=64,
        use_rotary_positional_embeddings=True, sample_height=h, sample_width=w, sample_frames=(window - 1) * 4 + 1,
    )
    return cfg, window, (h, w)


def core_child(factor: int, quick: bool) -> dict:
    """Runs in a fresh process: core KSampler on the core MODEL in core context windows of the trained
    length (``long_video_case``), at ``factor`` x that length; the peak RSS the sampling added.
    A negative ``factor``: ``-factor`` x the length with no context windows (the model has RoPE only).

    The activations of a window dominate at this size (tokens = window x h/2 x w/2 + 226 text), so
    the ratio 3x / 1x shows whether memory is bounded by the window. glibc returns freed large
    blocks to the system (``MALLOC_MMAP_THRESHOLD_``, set by ``_spawn_core``), so RSS follows the
    live tensors rather than the allocator's high-water mark."""
    torch.set_num_threads(THREADS)
    _load_comfy()
    import comfy.model_patcher
    from cogvideox_pack.cogvideox import configs, transformer
    from cogvideox_pack.nodes.core_model import CogVideoXCoreModel, add_sampling_checks
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    import nodes as comfy_nodes

    tcfg, window, (h, w) = long_video_case(quick)
    variant = dataclasses.replace(configs.VARIANTS["5b"], transformer=tcfg)
    net = randomize(transformer.CogVideoXTransformer(tcfg).eval(), seed=0)
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(CogVideoXCoreModel(net, variant), cpu, cpu)
    add_sampling_checks(patcher)
    model = patcher
    if factor > 0:
        node = ContextWindowsManualNode
        model = node.execute(patcher, window, 1, "standard_static", 1, False, "pyramid", 2).result[0]
    gen = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 226, tcfg.text_embed_dim, generator=gen), {}]]
    neg = [[torch.randn(1, 226, tcfg.text_embed_dim, generator=gen), {}]]
    steps = 1 if quick else 2
    frames = window * abs(factor)

    def run(n: int, t: int):
        latent = {"samples": torch.zeros(1, 16, t, h, w)}
        return comfy_nodes.KSampler().sample(model, 0, n, 6.0, "euler", "simple", pos, neg, latent)[0]["samples"]

    with torch.inference_mode():
        run(1, window)  # warm-up at the trained length (the same in every child): kernels, caches
        gc.collect()
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        start = time.perf_counter()
        out = run(steps, frames)
        seconds = time.perf_counter() - start
        peak = _status_kib("VmHWM")
    return {
        "frames": frames, "steps": steps, "windows": factor > 0, "seconds": seconds, "peak_mib": (peak - before) / 1024,
        "size": f"{h}x{w}", "finite": bool(torch.isfinite(out).all()),
        "model": f"{tcfg.num_layers} layers x {tcfg.num_attention_heads} heads x {tcfg.attention_head_dim}",
    }


def _spawn_core(factor: int, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--core-child", str(factor)] + (["--quick"] if quick else [])
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": "262144"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"core child x{factor} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- cache
def cache_model(quick: bool):
    """The shipped tiny model (tiny/diffusion_models, tiny/vae) when present, else a random tiny-ish one."""
    from cogvideox.loading import load_transformer, load_vae

    tf_files = sorted((ROOT / "tiny" / "diffusion_models").glob("*t2v*.safetensors"))
    vae_files = sorted((ROOT / "tiny" / "vae").glob("*.safetensors"))
    if tf_files and vae_files:
        model, variant = load_transformer(tf_files[0], dtype=torch.float32)
        vae = load_vae(vae_files[0], dtype=torch.float32)
        return model.eval(), vae.eval(), variant, "shipped tiny model"
    tcfg, vcfg, (t, h, w) = tiny_ish(quick)
    model = randomize(CogVideoXTransformer(tcfg).eval(), seed=0)
    torch.manual_seed(0)
    vae = CogVideoXVAE(vcfg).eval()
    variant = dataclasses.replace(
        VARIANTS["5b"], transformer=tcfg, frames=(t - 1) * 4 + 1, height=h * 8, width=w * 8
    )
    return model, vae, variant, "random tiny-ish model"


def _cache_study():
    """``tools/cache_study.py``: the study's pairs, its tiny T5 and its CFG (the T2V template's)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import cache_study
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return cache_study


CACHE_PAIRS = 8  # prompt/seed pairs of tools/cache_study.py (the shipped tiny model) for the quality
CACHE_TIMED_REPEATS = 7  # interleaved timed pairs per --repeats: a run is half a second here


class _StepCount(logging.Handler):
    """Collects the pipeline's "step cache: ran N of M steps" lines."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.ran: list[tuple[int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"step cache: ran (\d+) of (\d+) steps", record.getMessage())
        if found:
            self.ran.append((int(found[1]), int(found[2])))


def _cache_prompts(model_cfg: TransformerConfig, name: str) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(positive, negative, seed) per pair: the study's captions with the tiny T5, else random embeddings."""
    if name == "shipped tiny model":
        try:
            cache_study = _cache_study()
            study_pairs = cache_study.PAIRS[:CACHE_PAIRS]
            encode = cache_study.tiny_eval.text_encoder()
            negative = encode([""])
            return [(encode([caption]), negative, seed) for caption, seed in study_pairs]
        except (ImportError, OSError, KeyError, ValueError) as exc:
            log.info("tiny T5 not usable (%s); random prompt embeddings", exc)
    gen = torch.Generator().manual_seed(5)
    neg = torch.zeros(1, model_cfg.max_text_seq_length, model_cfg.text_embed_dim)
    return [(torch.randn(1, model_cfg.max_text_seq_length, model_cfg.text_embed_dim, generator=gen), neg, seed)
            for seed in range(CACHE_PAIRS)]


def bench_cache(quick: bool, repeats: int, threshold: float, steps: int, plan: str = "calibrated") -> list[Row]:
    """Step cache vs uncached: transformer calls and worst-case PSNR over the pairs, and the
    sampling time of the first pair, interleaved (median ratio and its run-to-run range)."""
    from cogvideox.pipeline import sample

    model, vae, variant, name = cache_model(quick)
    cfg = model.config
    p = cfg.patch_size
    h, w = variant.height // 8 // p * p, variant.width // 8 // p * p
    t = 2 if quick else (variant.frames - 1) // cfg.temporal_compression_ratio + 1
    pairs = _cache_prompts(cfg, name)[: 2 if quick else CACHE_PAIRS]
    guidance = _cache_study().CFG  # the T2V template's (2.5 for the shipped tiny model), as the study and calibrator

    def sampled(th: float, pair) -> torch.Tensor:
        pos, neg, seed = pair
        z = torch.zeros(1, 16, t, h, w)
        return sample(model, variant, z, pos, neg, steps=steps, cfg=guidance, seed=seed, cache_threshold=th,
                      cache_plan=plan)

    counter = _StepCount()
    pipeline_log = logging.getLogger("cogvideox.pipeline")
    pipeline_log.addHandler(counter)
    previous_level = pipeline_log.level
    pipeline_log.setLevel(logging.INFO)
    ratios, t_cached, t_plain = [], [], []
    try:
        with torch.inference_mode():
            quality = [psnr(vae.decode(sampled(threshold, pair)), vae.decode(sampled(0.0, pair))) for pair in pairs]
            computed = [ran for ran, _ in counter.ran]
            sampled(threshold, pairs[0]), sampled(0.0, pairs[0])  # warm-up
            for _ in range(repeats * CACHE_TIMED_REPEATS):
                times = []
                for th in (threshold, 0.0):
                    gc.collect()
                    start = time.perf_counter()
                    sampled(th, pairs[0])
                    times.append(time.perf_counter() - start)
                t_cached.append(times[0])
                t_plain.append(times[1])
                ratios.append(times[0] / times[1])
    finally:
        pipeline_log.removeHandler(counter)
        pipeline_log.setLevel(previous_level)
    what = (f"step cache threshold {threshold}, {plan} plan, vs uncached, {steps} steps, CFG {guidance:g} ({name}, "
            f"latent {t}x{h}x{w})")
    calls = f"{min(computed)}-{max(computed)} of {steps} steps computed over {len(pairs)} pairs"
    spread = f"run-to-run {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} interleaved pairs"
    target = ">= 2.0x faster (<= 0.5x)" if steps >= 50 else ">= 1.5x faster (<= 0.67x)"
    return [
        Row(what, f"transformer calls ({calls})", max(computed), steps, "steps", target),
        Row(what, f"sampling time, first pair ({spread})", statistics.median(t_cached),
            statistics.median(t_plain), "s", target),
        Row(what, f"PSNR of frames vs uncached, worst of {len(pairs)} pairs (median "
            f"{sorted(quality)[len(quality) // 2]:.1f} dB)", min(quality), None, "dB", ">= 30 dB"),
    ]


# ----------------------------------------------------------------------------- main
def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, nproc={os.cpu_count()}, torch {torch.__version__} ({THREADS} threads), no GPU"


SECTIONS = ["transformer", "vae", "pipeline", "cache", "core", "ops", "corevae", "lora", "videocrafter"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--only", choices=SECTIONS)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 1)")
    parser.add_argument("--cache-threshold", type=float, default=5.0,
                        help="the cache rows' threshold (default 5: the calibrated plan's caps decide, as calibrated)")
    parser.add_argument("--cache-steps", type=int, nargs="+", default=[50, 25], help="a row set per step count")
    parser.add_argument("--out", default=None, help="markdown output (default artifacts/benchmark.md when full)")
    parser.add_argument("--vae-child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    parser.add_argument("--core-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tiled", dest="tiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--untiled", dest="tiled", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.vae_child:
        print(json.dumps(vae_child(args.vae_child, args.tiled, args.quick)))
        return 0
    if args.core_child:
        print(json.dumps(core_child(args.core_child, args.quick)))
        return 0

    torch.set_num_threads(THREADS)
    repeats = args.repeats or (1 if args.quick else 5)
    sections = [args.only] if args.only else SECTIONS
    rows: list[Row] = []
    for section in sections:
        log.info("running %s ...", section)
        if section == "transformer":
            rows += bench_transformer(args.quick, repeats)
        elif section == "vae":
            rows += bench_vae(args.quick)
        elif section == "pipeline":
            rows += bench_pipeline(args.quick, repeats)
        elif section == "core":
            rows += bench_core(args.quick, repeats)
        elif section == "ops":
            rows += bench_ops(args.quick, repeats)
        elif section == "corevae":
            rows += bench_core_vae(args.quick, repeats)
        elif section == "lora":
            rows += __import__("bench_lora").bench_lora(args.quick, repeats)
        elif section == "videocrafter":
            rows += __import__("bench_videocrafter").bench_videocrafter(args.quick, repeats)
        else:
            for steps in [10] if args.quick else args.cache_steps:
                rows += bench_cache(args.quick, repeats, args.cache_threshold, steps)

    command = "python tools/benchmark.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv)
    )
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; float32; median of {repeats} interleaved run(s) after a warm-up.",
        "",
        "| what | metric | ours / diffusers | ours | diffusers | target |",
        "|---|---|---|---|---|---|",
        *(r.markdown() for r in rows),
    ]
    table = "\n".join(lines)
    print(table)
    out = args.out if args.out is not None else ("" if (args.quick or args.only) else "artifacts/benchmark.md")
    if out:
        path = ROOT / out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table + "\n")
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
