"""``make bench`` rows for LoRAs: a transformer step with a LoRA patched at load, and on fp8 weight
storage with the LoRA added at compute time (what the CogVideoX LoRA node does on those layers),
each against the same model without the LoRA. Run through ``tools/benchmark.py --only lora``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark import Row, randomize, timed_pair, transformer_config  # noqa: E402

from cogvideox.transformer import CogVideoXTransformer  # noqa: E402

log = logging.getLogger("benchmark")


def bench_lora(quick: bool, repeats: int, rank: int = 64) -> list[Row]:
    """Step time with a LoRA patched into the weights at load against the same model without one."""
    from cogvideox import lora

    cfg, (t, h, w) = transformer_config(quick)
    base = randomize(CogVideoXTransformer(cfg).eval(), seed=0)
    patched = randomize(CogVideoXTransformer(cfg).eval(), seed=0)
    gen = torch.Generator().manual_seed(2)
    factors = {}
    for name, (o, i) in lora.linear_targets(patched).items():
        factors[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, i, generator=gen) * 0.01
        factors[f"transformer.{name}.lora_B.weight"] = torch.randn(o, rank, generator=gen) * 0.01
    parsed = lora.parse_lora(factors, {}, lora.linear_targets(patched))
    modules = dict(patched.named_modules())
    with torch.no_grad():  # what ModelPatcher.patch_weight_to_device does: a new tensor per patched weight
        for name, layer in parsed.layers.items():
            weight = modules[name].weight
            modules[name].weight = torch.nn.Parameter(weight + layer.delta(), requires_grad=False)
    x = torch.randn(2, 16, t, h, w, generator=gen)
    ctx = torch.randn(2, 226, cfg.text_embed_dim, generator=gen)
    timestep = torch.tensor([500, 500])
    with torch.inference_mode():
        effect = (patched(x, timestep, ctx) - base(x, timestep, ctx)).abs().max().item()
        t_lora, t_base = timed_pair(lambda: patched(x, timestep, ctx), lambda: base(x, timestep, ctx), repeats)
    log.info("lora: %d layers patched, max abs change of the output %.3g", len(parsed.layers), effect)
    what = (f"transformer step with a rank-{rank} LoRA on all {len(parsed.layers)} Linears patched at load "
            f"(ratio: with / without LoRA; {cfg.num_layers} layers, latent {t}x{h}x{w})")
    rows = [Row(what, "time", t_lora, t_base, "s", "<= 1.02x")]
    # fp8 storage: the LoRA added when each weight is upcast (what the node's add_weight_wrapper does)
    from cogvideox import quant

    fp8 = quant.store_weights(randomize(CogVideoXTransformer(cfg).eval(), seed=0), "fp8")
    stored = {n: m for n, m in fp8.named_modules() if isinstance(m, quant.LowPrecisionLinear) and n in parsed.layers}

    def run_fp8(with_lora: bool):
        for name, layer in stored.items():
            layer.weight_function = [lora.WeightDelta(parsed.layers[name], parsed.layers[name].scale,
                                                      layer.stored_scale())] if with_lora else []
        return fp8(x, timestep, ctx)

    with torch.inference_mode():
        t_fp8_lora, t_fp8 = timed_pair(lambda: run_fp8(True), lambda: run_fp8(False), repeats)
    rows.append(Row(f"fp8 weight storage, the same LoRA added at compute time on {len(stored)} stored Linears "
                    "(ratio: with / without LoRA)", "time", t_fp8_lora, t_fp8, "s", ""))
    return rows
