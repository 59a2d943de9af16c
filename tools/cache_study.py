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
- ``adaptive``: the library's ``cache.CachedDenoiser`` (TeaCache-like indicator, warm-up, cap).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "tiny"))

import evaluate as tiny_eval  # noqa: E402  (tools/tiny/evaluate.py)

from cogvideox import synthetic  # noqa: E402
from cogvideox.cache import CachedDenoiser  # noqa: E402
from cogvideox.pipeline import Denoiser  # noqa: E402
from cogvideox.samplers import SAMPLERS, frames_first_noise  # noqa: E402
from cogvideox.schedules import make_schedule  # noqa: E402
from cogvideox.transformer import Tokens  # noqa: E402

log = logging.getLogger("cache_study")
PAIRS = [(synthetic.caption_for(*tiny_eval.CAPTIONS[(k * 13) % 48]), k) for k in range(8)]  # (caption, seed)
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


class Study:
    def __init__(self):
        self.models = tiny_eval.Models.load(i2v=False)
        self.negative = self.models.encode([""])
        self.positive = {c: self.models.encode([c]) for c, _ in PAIRS}
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

    def measure(self, name: str, steps: int, make_denoiser) -> dict:
        scores, rows = [], []
        for caption, seed in PAIRS:
            key = (caption, seed, steps)
            if key not in self.reference:
                self.reference[key] = self.run(caption, seed, steps, self.fixed(lambda i, n: "full"))[0]
            video, computed = self.run(caption, seed, steps, make_denoiser)
            scores.append(synthetic.psnr(video, self.reference[key]))
            rows.append(computed)
        scores.sort()
        result = {"name": name, "steps": steps, "worst_db": scores[0], "median_db": scores[len(scores) // 2],
                  "speedup": (2 * steps / max(rows), 2 * steps / min(rows))}
        log.info("%-48s %2d steps: worst %.1f dB, median %.1f dB, %.2f-%.2fx fewer rows", name, steps,
                 scores[0], result["median_db"], *result["speedup"])
        return result

    def fixed(self, policy: Policy):
        def make(model, schedule, positive):
            hook = FixedPolicyCache(policy, len(schedule))
            return _HookDenoiser(model, schedule, positive, self.negative, cfg=6.0, hook=hook), lambda d: d.hook.rows
        return make

    def adaptive(self, **options):
        def make(model, schedule, positive):
            den = CachedDenoiser(model, schedule, positive, self.negative, cfg=6.0, **options)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["fixed", "adaptive"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    study = Study()
    if args.only in (None, "adaptive"):
        for steps, max_skips in ((50, 3), (50, 4), (25, 1), (25, 2)):
            study.measure(f"adaptive: threshold 0.8, start 0.4, max_skips {max_skips}", steps,
                          study.adaptive(threshold=0.8, start=0.4, max_skips=max_skips))
    if args.only in (None, "fixed"):
        for name, steps, policy in fixed_policies():
            study.measure(name, steps, study.fixed(policy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
