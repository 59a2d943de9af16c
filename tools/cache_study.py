"""Step-cache study on the shipped tiny model: each caching idea on 8 prompt/seed pairs.

    .venv/bin/python tools/cache_study.py            # every policy below, 50 and 25 steps
    .venv/bin/python tools/cache_study.py --only adaptive

For every policy: PSNR of the decoded frames against the uncached run (worst and median over
the pairs) and the transformer rows computed (a CFG step runs two rows: unconditional and
conditional), whose ratio to the uncached run is the speed-up counted in network work (timing
is the benchmark's job: ``tools/benchmark.py --only cache``). Policies are per-step actions
on the block stack (``cogvideox.transformer`` step-cache hook):

- ``full``: both halves computed; ``skip``: both halves reuse the last computed residual;
- ``cond``: only the conditional half computed, the unconditional residual is the conditional
  one plus their difference at the last full step (FasterCache's CFG-residual reuse);
- ``ucache``: only the conditional half computed, the unconditional residual reused as is;
- ``skipx``: both halves reuse the line through the last two computed residuals (extrapolation);
- ``nocfg``: guidance off for the step (only the conditional half computed, its residual used for
  both halves, so the guided output is the conditional one): guidance limited to an interval of
  the schedule (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample
  and Distribution Quality in Diffusion Models", arXiv:2404.07724), here its low-noise end;
- ``adaptive``: the library's ``cache.CachedDenoiser`` (TeaCache-like indicator, warm-up, cap);
- ``calibrated``: the library's calibrated skip plans (``cache.CALIBRATED_PHASES``, written by
  ``tools/cache_calibrate.py`` from runs on ``CALIBRATION_PAIRS``);
- ``indicators`` (``IndicatorCache``): what the anchors decide with, each with a 30% warm-up and
  at most 4 skips in a row, the threshold in multiples of the indicator's median per-step value
  on the calibration runs (about that many steps' worth of change between computed steps):
  ``tea`` TeaCache (Liu et al. 2024): the relative L1 change of the timestep-modulated input,
  rescaled by a degree-4 polynomial fitted (on the calibration runs) to the relative change of the
  block-stack residual, accumulated; ``mag`` MagCache (Ma et al. 2025): the accumulated
  ``|1 - r_i|`` of the calibrated mean ratio ``r_i`` of residual magnitudes of consecutive steps;
  ``res`` the residual's own change per step between the last two computed steps (online,
  per prompt); ``fb`` First-Block-Cache: block 0 runs every step and the relative change of its
  residual against the last computed step's decides (a check costs 1/num_blocks of a row).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "tiny"))

import evaluate as tiny_eval  # noqa: E402  (tools/tiny/evaluate.py)

from cogvideox import synthetic  # noqa: E402
from cogvideox.cache import CachedDenoiser, calibrated_phases  # noqa: E402
from cogvideox.pipeline import Denoiser  # noqa: E402
from cogvideox.samplers import SAMPLERS, frames_first_noise  # noqa: E402
from cogvideox.schedules import make_schedule  # noqa: E402
from cogvideox.transformer import Tokens  # noqa: E402

log = logging.getLogger("cache_study")
PAIRS = [(synthetic.caption_for(*tiny_eval.CAPTIONS[(k * 13) % 48]), k) for k in range(8)]  # (caption, seed)
# pairs for calibration (tools/cache_calibrate.py): other captions, other seeds
CALIBRATION_PAIRS = [(synthetic.caption_for(*tiny_eval.CAPTIONS[(k * 13 + 7) % 48]), 100 + k) for k in range(8)]
assert not {c for c, _ in PAIRS} & {c for c, _ in CALIBRATION_PAIRS}
# the guidance every policy samples at: the shipped text_to_video template's (2.5 since 2026-11-28; the
# studies before it sampled at the reference's 6, where a skipped step's error is multiplied by 6)
CFG = tiny_eval.Settings.from_workflow("text_to_video").cfg
Policy = Callable[[int, int], str]  # (step, steps) -> action


class FixedPolicyCache:
    """A step-cache hook that runs a fixed action per step and counts the rows it computed."""

    def __init__(self, policy: Policy, steps: int):
        self.policy, self.steps = policy, steps
        self.step, self.rows = 0, 0
        self.history: list[tuple[int, torch.Tensor]] = []  # (step, residual [2B, N, D]) of full steps
        self.residual: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None  # uncond - cond residual at the last full step

    def _cond_half(self, model, tokens: Tokens) -> torch.Tensor:
        b = tokens.video.shape[0] // 2
        half = Tokens(tokens.video[b:], tokens.text[b:], tokens.temb[b:], tokens.rope, tokens.grid)
        video, _ = model.run_all_blocks(half)
        self.rows += 1
        return video - half.video  # [B, N, D]

    def __call__(self, model, tokens: Tokens):
        action = self.policy(self.step, self.steps)
        b = tokens.video.shape[0] // 2
        if action == "full":
            video, _ = model.run_all_blocks(tokens)
            self.residual = video - tokens.video
            self.delta = self.residual[:b] - self.residual[b:]
            self.history = [*self.history[-1:], (self.step, self.residual)]
            self.rows += 2
            return video, tokens.text
        if action == "cond":
            cond = self._cond_half(model, tokens)
            self.residual = torch.cat([cond + self.delta, cond])
        elif action == "ucache":
            self.residual = torch.cat([self.residual[:b], self._cond_half(model, tokens)])
        elif action == "nocfg":  # guidance off for this step: the conditional residual for both halves
            cond = self._cond_half(model, tokens)
            self.residual = torch.cat([cond, cond])
        elif action == "skipx":
            (i0, r0), (i1, r1) = self.history
            return tokens.video + torch.lerp(r0, r1, (self.step - i0) / (i1 - i0)), tokens.text
        elif action != "skip":
            raise ValueError(f"unknown action {action!r}")
        return tokens.video + self.residual, tokens.text


class _HookDenoiser(Denoiser):
    def __init__(self, *args, hook, **kwargs):
        super().__init__(*args, **kwargs)
        self.hook = hook

    def velocity(self, x, i):
        self.hook.step = i
        self.model.step_cache = self.hook
        try:
            return super().velocity(x, i)
        finally:
            self.model.step_cache = None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / b.abs().mean().clamp_min(1e-12)).item()


class _Recorder:
    """A step-cache hook that computes every step and records the indicators' raw values."""

    def __init__(self):
        self.step, self.previous = 0, None
        self.samples: list[dict] = []

    def __call__(self, model, tokens: Tokens):
        modulated = model.first_block_modulated_input(tokens)
        first = _first_block_residual(model, tokens)
        video, text = model.run_all_blocks(tokens)
        residual = video - tokens.video
        if self.previous is not None:
            m, f, r = self.previous
            ratio = residual.abs().mean().item() / r.abs().mean().item()
            self.samples.append({"step": self.step, "input": _rel(modulated, m), "first": _rel(first, f),
                                 "residual": _rel(residual, r), "ratio": ratio})
        self.previous = (modulated, first, residual)
        return video, text


def _first_block_residual(model, tokens: Tokens) -> torch.Tensor:
    hs = torch.cat([tokens.text, tokens.video], dim=1)  # [B, L+N, D]
    out = model.block_forward(0, hs, tokens.temb, tokens.rope, tokens.text.shape[1])
    return out[:, tokens.text.shape[1]:] - tokens.video  # [B, N, D]


class IndicatorCache:
    """Adaptive skipping with one of the anchors' indicators (see the module docstring)."""

    def __init__(self, kind: str, threshold: float, steps: int, calibration: dict, start: float = 0.3, cap: int = 4):
        self.kind, self.steps, self.cap = kind, steps, cap
        self.threshold = threshold * calibration["median"][kind]
        self.poly, self.ratios = calibration["poly"], calibration["ratios"]
        self.warmup = max(1, round(start * steps))
        self.step, self.rows, self.accumulated, self.in_a_row = 0, 0.0, 0.0, 0
        self.residual = self.last = self.rate = self.modulated = self.first = None

    def _compute(self, model, tokens: Tokens, first: torch.Tensor | None = None):
        video, text = model.run_all_blocks(tokens)
        residual = video - tokens.video
        if self.residual is not None:
            self.rate = _rel(residual, self.residual) / (self.step - self.last)
        self.residual, self.last, self.first = residual, self.step, first
        self.accumulated, self.in_a_row = 0.0, 0
        self.rows += 2
        return video, text

    def __call__(self, model, tokens: Tokens):
        i = self.step
        change = 0.0
        if self.kind == "tea":
            modulated = model.first_block_modulated_input(tokens)
            if self.modulated is not None:
                change = abs(float(np.polyval(self.poly, _rel(modulated, self.modulated))))
            self.modulated = modulated
        must = i < self.warmup or i == self.steps - 1 or self.residual is None or self.in_a_row >= self.cap
        if self.kind == "fb":
            first = _first_block_residual(model, tokens)
            if must or self.first is None:
                return self._compute(model, tokens, first)
            self.rows += 2 / len(model.transformer_blocks)
            if _rel(first, self.first) >= self.threshold:
                return self._compute(model, tokens, first)
        else:
            if must:
                return self._compute(model, tokens)
            if self.kind == "mag":
                change = abs(1 - self.ratios[i])
            elif self.kind == "res":
                change = self.rate if self.rate is not None else float("inf")
            self.accumulated += change
            if self.accumulated >= self.threshold:
                return self._compute(model, tokens)
        self.in_a_row += 1
        return tokens.video + self.residual, tokens.text


class Study:
    def __init__(self, calibration: bool = False):
        self.models = tiny_eval.Models.load(i2v=False)
        self.negative = self.models.encode([""])
        self.positive = {c: self.models.encode([c]) for c, _ in PAIRS + (CALIBRATION_PAIRS if calibration else [])}
        self.reference: dict[tuple[str, int, int], torch.Tensor] = {}

    @torch.no_grad()
    def run(self, caption: str, seed: int, steps: int, make_denoiser) -> tuple[torch.Tensor, int]:
        model, variant = self.models.t2v
        schedule = make_schedule(variant.scheduler_config(), steps, 1.0)
        noise = frames_first_noise(torch.Generator().manual_seed(seed))
        x = noise(torch.zeros(1, *tiny_eval.Settings.from_workflow("text_to_video").latent_shape()))
        denoiser, rows = make_denoiser(model, schedule, self.positive[caption])
        out = SAMPLERS[variant.scheduler](denoiser, x, schedule, noise_sampler=noise, callback=None)
        return self.models.vae.decode(out / variant.scaling_factor)[0].clamp(-1, 1), rows(denoiser)

    def score(self, caption: str, seed: int, steps: int, make_denoiser) -> tuple[float, int]:
        """PSNR of one pair's frames against its uncached run, and the rows computed."""
        key = (caption, seed, steps)
        if key not in self.reference:
            self.reference[key] = self.run(caption, seed, steps, self.fixed(lambda i, n: "full"))[0]
        video, computed = self.run(caption, seed, steps, make_denoiser)
        return synthetic.psnr(video, self.reference[key]), computed

    def measure(self, name: str, steps: int, make_denoiser) -> dict:
        scores, rows = [], []
        for caption, seed in PAIRS:
            db, computed = self.score(caption, seed, steps, make_denoiser)
            scores.append(db)
            rows.append(computed)
        scores.sort()
        result = {"name": name, "steps": steps, "worst_db": scores[0], "median_db": scores[len(scores) // 2],
                  "speedup": (2 * steps / max(rows), 2 * steps / min(rows))}
        log.info("%-48s %2d steps: worst %.1f dB, median %.1f dB, %.2f-%.2fx fewer rows", name, steps,
                 scores[0], result["median_db"], *result["speedup"])
        return result

    def calibrate_indicators(self, steps: int) -> dict:
        """Record every indicator on full runs of the calibration pairs; fit TeaCache's polynomial."""
        samples = []
        for caption, seed in CALIBRATION_PAIRS[:4]:
            self.positive.setdefault(caption, self.models.encode([caption]))
            hook = _Recorder()
            self.run(caption, seed, steps, lambda m, s, p, hook=hook: (
                _HookDenoiser(m, s, p, self.negative, cfg=CFG, hook=hook), lambda d: 0))
            samples += hook.samples
        x = np.array([r["input"] for r in samples])
        y = np.array([r["residual"] for r in samples])
        poly = np.polyfit(x, y, 4)
        ratios = [1.0] + [float(np.mean([r["ratio"] for r in samples if r["step"] == i])) for i in range(1, steps)]
        median = {"tea": float(np.median(np.abs(np.polyval(poly, x)))), "res": float(np.median(y)),
                  "mag": float(np.median(np.abs(1 - np.array(ratios[1:])))),
                  "fb": float(np.median([r["first"] for r in samples]))}
        log.info("%d steps: input/residual change correlation %.2f; medians %s", steps, np.corrcoef(x, y)[0, 1],
                 {k: round(v, 3) for k, v in median.items()})
        return {"poly": poly, "ratios": ratios, "median": median}

    def indicator(self, kind: str, threshold: float, calibration: dict):
        def make(model, schedule, positive):
            hook = IndicatorCache(kind, threshold, len(schedule), calibration)
            return _HookDenoiser(model, schedule, positive, self.negative, cfg=CFG, hook=hook), lambda d: d.hook.rows
        return make

    def fixed(self, policy: Policy):
        def make(model, schedule, positive):
            hook = FixedPolicyCache(policy, len(schedule))
            return _HookDenoiser(model, schedule, positive, self.negative, cfg=CFG, hook=hook), lambda d: d.hook.rows
        return make

    def adaptive(self, **options):
        def make(model, schedule, positive):
            den = CachedDenoiser(model, schedule, positive, self.negative, cfg=CFG, **options)
            return den, lambda d: 2 * len(d.cache.computed)
        return make


def _from(first: int, every: int, action: str, other: str = "full") -> Policy:
    """``full`` before ``first`` and at the last step; from ``first`` on, ``other`` 1 in ``every``, else ``action``."""
    return lambda i, n: "full" if i < first or i == n - 1 else (other if (i - first) % every == 0 else action)


def fixed_policies() -> list[tuple[str, int, Policy]]:
    return [
        ("cond-only (CFG-residual reuse) from 20", 50, _from(20, 1, "cond", "cond")),
        ("cond-only (CFG-residual reuse) from 30", 50, _from(30, 1, "cond", "cond")),
        ("alternate full / cond", 50, lambda i, n: "full" if i % 2 == 0 or i == n - 1 else "cond"),
        ("alternate full / ucache (uncond reused)", 50, lambda i, n: "full" if i % 2 == 0 or i == n - 1 else "ucache"),
        ("every other of 0-9 skipped", 50, lambda i, n: "skip" if i < 10 and i % 2 else "full"),
        ("every other of 10-19 skipped", 50, lambda i, n: "skip" if 10 <= i < 20 and i % 2 else "full"),
        ("every other of 20-29 skipped", 50, lambda i, n: "skip" if 20 <= i < 30 and i % 2 else "full"),
        ("full < 20, then 1 in 3, reuse", 50, _from(20, 3, "skip")),
        ("full < 20, then 1 in 3, extrapolate", 50, _from(20, 3, "skipx")),
        ("full < 20, then 1 in 4, reuse", 50, _from(20, 4, "skip")),
        ("full < 20, then 1 in 4, extrapolate", 50, _from(20, 4, "skipx")),
        ("full < 10, then 1 in 3, reuse", 50, _from(10, 3, "skip")),
        ("full < 20, then 1 in 3, cond", 50, _from(20, 3, "skip", "cond")),
        ("full < 10, then 1 in 3, reuse (25 steps)", 25, _from(10, 3, "skip")),
    ]


def guidance_interval_policies() -> list[tuple[str, int, Policy]]:
    """Guidance off late in the schedule (``nocfg``: one row a step), alone and mixed with skips."""
    return [
        ("full < 25, then guidance off", 50, _from(25, 1, "nocfg", "nocfg")),
        ("full < 35, then guidance off", 50, _from(35, 1, "nocfg", "nocfg")),
        ("full < 20, then guidance off 1 in 2, else reuse", 50, _from(20, 2, "skip", "nocfg")),
        ("full < 18, then guidance off 1 in 2, else reuse", 50, _from(18, 2, "skip", "nocfg")),
        ("full < 20, then full 1 in 3, else guidance off", 50, _from(20, 3, "nocfg")),
        ("full < 15, then full 1 in 4, else reuse", 50, _from(15, 4, "skip")),
        ("full < 15, then full 1 in 3, else guidance off / reuse", 50,
         lambda i, n: "full" if i < 15 or i == n - 1 else ("full", "nocfg", "skip")[(i - 15) % 3]),
        ("full < 10, then guidance off 1 in 2, else reuse (25 steps)", 25, _from(10, 2, "skip", "nocfg")),
        ("full < 12, then guidance off (25 steps)", 25, _from(12, 1, "nocfg", "nocfg")),
        ("full < 10, then full 1 in 2, else guidance off (25 steps)", 25, _from(10, 2, "nocfg")),
        ("full < 8, then full 1 in 3, else guidance off (25 steps)", 25, _from(8, 3, "nocfg")),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["fixed", "adaptive", "calibrated", "indicators", "guidance"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    study = Study()
    if args.only in (None, "calibrated"):
        for steps in (50, 25):
            for threshold in (5.0, 0.8):  # 5: the plan's caps decide (the benchmark's); 0.8: the indicator adds steps
                study.measure(f"calibrated plan {calibrated_phases(steps)}, threshold {threshold}", steps,
                              study.adaptive(threshold=threshold, plan="calibrated"))
    if args.only in (None, "indicators"):
        for steps in (50, 25):
            calibration = study.calibrate_indicators(steps)
            for kind in ("tea", "mag", "res", "fb"):
                for threshold in (1.5, 2.5, 3.5):
                    study.measure(f"{kind}: threshold {threshold} x median", steps,
                                  study.indicator(kind, threshold, calibration))
    if args.only in (None, "adaptive"):
        for steps, max_skips in ((50, 3), (50, 4), (25, 1), (25, 2)):
            study.measure(f"adaptive: threshold 0.8, start 0.4, max_skips {max_skips}", steps,
                          study.adaptive(threshold=0.8, start=0.4, max_skips=max_skips))
    if args.only in (None, "fixed"):
        for name, steps, policy in fixed_policies():
            study.measure(name, steps, study.fixed(policy))
    if args.only in (None, "guidance"):
        for name, steps, policy in guidance_interval_policies():
            study.measure(name, steps, study.fixed(policy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
