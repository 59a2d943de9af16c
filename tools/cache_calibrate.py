"""Calibrate the step cache's skip plans (``cogvideox.cache.CALIBRATED_PHASES``) on the shipped tiny model.

    .venv/bin/python tools/cache_calibrate.py                 # 50 and 25 steps, prints the table
    .venv/bin/python tools/cache_calibrate.py --steps 50 --speedup 2.0

Re-run it after retraining the tiny model and paste the printed ``CALIBRATED_PHASES`` into
``cogvideox/cache.py``; then ``tools/cache_study.py --only calibrated`` measures the plans on the
evaluation pairs, and ``tools/benchmark.py --only cache`` times them.

A plan is ``((fraction, max_skips), ...)``: no skip before the first fraction of the steps, then
at most ``max_skips`` steps in a row reuse the last computed residual (the last step always
runs). Candidates are one or two phases (``candidates``); each is run on the calibration
prompt/seed pairs (``cache_study.CALIBRATION_PAIRS``: captions and seeds disjoint from the 8
evaluation pairs) and scored by the worst PSNR of the decoded frames against the uncached run.
Among the plans that compute at most ``steps / speedup`` steps the best worst case wins (ties:
fewer computed steps). A candidate stops at its first pair below the best worst case so far.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import cache_study  # noqa: E402  (tools/cache_study.py)

from cogvideox.cache import Phases, StepCache  # noqa: E402

log = logging.getLogger("cache_calibrate")
TARGETS = {50: 2.0, 25: 1.5}  # the step counts calibrated and the speed-up each must reach


def computed_steps(phases: Phases, steps: int) -> list[int]:
    """The steps a plan computes when the cap decides (the indicator never asks for a step)."""
    cache = StepCache(math.inf, steps, phases=phases)
    done = []
    for i in range(steps):
        cache.step = i
        edge = i < cache.warmup or i == steps - 1
        if edge or cache.in_a_row >= cache.caps[i]:
            done.append(i)
            cache.in_a_row = 0
        else:
            cache.in_a_row += 1
    return done


def candidates(steps: int, budget: int) -> list[Phases]:
    """One- and two-phase plans that compute ``budget`` or ``budget - 1`` steps, most computed first."""
    warmups = (0.24, 0.28, 0.32, 0.36, 0.4, 0.44)
    plans: list[Phases] = [((w, k),) for w, k in itertools.product(warmups, (2, 3, 4, 5))]
    plans += [
        ((w, k), (m, k2))
        for w, k, m, k2 in itertools.product(warmups, (1, 2, 3), (0.5, 0.6), (3, 4, 5, 6))
        if k2 > k
    ]
    seen, kept = set(), []
    for plan in plans:
        done = tuple(computed_steps(plan, steps))
        if budget - 1 <= len(done) <= budget and done not in seen:
            seen.add(done)
            kept.append(plan)
    return sorted(kept, key=lambda p: -len(computed_steps(p, steps)))


def calibrate(study: cache_study.Study, steps: int, speedup: float) -> tuple[Phases, float]:
    budget = math.floor(steps / speedup)
    plans = candidates(steps, budget)
    log.info("%d steps: %d candidate plans computing at most %d steps", steps, len(plans), budget)
    best, best_worst = None, -math.inf
    for plan in plans:
        done = set(computed_steps(plan, steps))
        make = study.fixed(lambda i, n, done=done: "full" if i in done else "skip")
        worst = math.inf
        for caption, seed in cache_study.CALIBRATION_PAIRS:
            worst = min(worst, study.score(caption, seed, steps, make)[0])
            if worst <= best_worst:
                break
        log.info("  %s: %d computed, worst %.1f dB", plan, len(done), worst)
        if worst > best_worst:
            best, best_worst = plan, worst
    return best, best_worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(TARGETS))
    parser.add_argument("--speedup", type=float, help="fewer computed steps than this (default: 2.0 at 50, 1.5 at 25)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    study = cache_study.Study(calibration=True)
    table = {}
    for steps in args.steps:
        plan, worst = calibrate(study, steps, args.speedup or TARGETS.get(steps, 2.0))
        table[steps] = plan
        log.info("%d steps: %s, worst %.1f dB on the calibration pairs", steps, plan, worst)
    print("CALIBRATED_PHASES: dict[int, Phases] = {")
    for steps, plan in table.items():
        print(f"    {steps}: {plan!r},")
    print("}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
