"""Step caching (TeaCache-like): skip the transformer blocks on steps whose input barely moved.

At every step the timestep-modulated input of the first block (``first_block_modulated_input``:
the video tokens after block 0's adaptive norm, ``[B, N, D]``) is compared with the one of the
previous step: the relative L1 change ``mean|m_t - m_{t-1}| / mean|m_{t-1}|`` (optionally passed
through a rescaling polynomial) is accumulated. While the accumulated change stays below
``threshold`` the blocks are skipped and the video tokens leaving the block stack are the
entering tokens plus the residual (output - input of the block stack) of the last computed
step. When it reaches the threshold the blocks run, the residual is refreshed and the
accumulator is reset. The first ``start`` fraction of the steps and the last step always run:
on the shipped tiny model the steps at 20-40% of the schedule decide the layout of the video
and skipping any of them costs 5-10 dB, while skipping after 40% costs little (measured with
fixed skip patterns, 50 DPM steps: every other step of 11-19 skipped -> 24-27 dB, of 31-39
-> 52-54 dB). Caching methods for video models keep such warm-up steps too (TeaCache's
``ret_steps``; Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache for Video
Diffusion Model", arXiv:2411.19108). At most ``max_skips`` steps in a row reuse one residual:
the residual of this model changes by ~20% (relative L1) from step to step even late in the
schedule, so long runs of reuse drift.

Measured on the 64x64 tiny model shipped until 2026-11-28 (``tools/cache_study.py``: 8 prompt/seed pairs, PSNR of the
decoded frames against the uncached run, worst case over the pairs; speed-up in transformer
rows, a CFG step being two): threshold 0.8 with these defaults (``max_skips`` 3) computes 28 of
50 steps (1.79x) at 32.7 dB worst (median 36.2); ``max_skips`` 4 computes 26-27 (1.85-1.92x)
at 30.5 dB worst. What the anchors suggest, measured the same way, does not reach 2x at 30 dB
on this 4-block model: FasterCache-style CFG-residual reuse (the unconditional residual as the
conditional one plus the difference of the last full step) 8-17 dB worst at 1.2-1.4x; reusing
the unconditional residual alone 22 dB at 1.3x; linear extrapolation of the residual from the
last two computed steps (TaylorSeer-like) 25-26 dB where plain reuse gives 33-36; fewer
warm-up steps (every other step of 0-9 or 10-19 skipped) 15-22 dB; long gaps late (4 computed
steps in 20-49) 17-19 dB. At 25 steps ``max_skips`` 1 computes 18 of 25 (1.39x) at 29.8 dB worst.

Second pass (``docs/step_cache.md``, ``tools/cache_calibrate.py``): skip plans calibrated per step
count on prompt/seed pairs disjoint from the evaluation pairs (``plan="calibrated"``,
``CALIBRATED_PHASES``), and a skipped step's residual moved ``extrapolate`` of the way along the line
through the last two computed residuals (``CALIBRATED_EXTRAPOLATE``: half way; plain reuse lags a
residual that still changes ~20% a step, full linear extrapolation overshoots). On the 128x128 tiny
model shipped since, with threshold 0.8: 50 steps 26-27 computed (1.85-1.92x) at 29.7 dB worst
(median 35.8), 25 steps 16 computed (1.56x) at 30.7 dB worst (median 34.1); the adaptive default
there: 28 of 50 at 27.6 dB worst. TeaCache's fitted polynomial, MagCache's magnitude ratios, the
residual's own change rate, First-Block-Cache and block-level reuse measured the same way do worse:
the worst pair's layout is still moving in the first ~30% of the steps, and any skip there moves
its object.

Third pass (session 15, ``docs/step_cache.md``): the T2V template samples at CFG 2.5 since issue 16
(at the reference's 6 the tiny model overdraws), and guidance multiplies a skipped step's error by
the CFG scale. Recalibrated there (``tools/cache_calibrate.py`` and ``tools/cache_study.py`` take the
template's CFG), on the evaluation pairs: 50 steps **23 computed (2.17x fewer calls) at 30.8 dB
worst** (median 37.1) with the plan alone deciding (threshold 5), 24 computed at 32.4 dB with the
indicator at 0.8; 25 steps **15 computed (1.67x) at 32.3 dB worst** (median 36.1). Sampling time
(``tools/benchmark.py --only cache``): 0.47-0.50x and 0.62-0.67x of the uncached run.

The indicator, the decision and the residual cover the whole network batch (with CFG: the
unconditional and conditional halves together), so both halves skip together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from .pipeline import Denoiser
from .transformer import CogVideoXTransformer, Tokens

log = logging.getLogger(__name__)

DEFAULT_START = 0.4  # fraction of the steps that always run before any skip
DEFAULT_MAX_SKIPS = 3  # at most this many steps in a row reuse one residual (4: 30.5 dB worst, see above)

Phases = tuple[tuple[float, int], ...]  # (from this fraction of the steps on, at most this many skips in a row)

# Skip plans per step count, calibrated on the 128x128 tiny model at the T2V template's CFG 2.5 by
# ``tools/cache_calibrate.py --steps 50 --speedup 2.17`` / ``--steps 25 --speedup 1.66`` (23 and 15
# computed steps; prompt/seed pairs disjoint from the evaluation pairs of ``tools/cache_study.py``;
# 32.0 / 33.0 dB worst on those pairs). Step counts in between use the plan of the nearest calibrated
# count (the phases are fractions of the steps).
CALIBRATED_PHASES: dict[int, Phases] = {
    50: ((0.24, 1), (0.5, 5)),
    25: ((0.36, 1), (0.6, 3)),
}
# ``StepCache.extrapolate`` of each calibrated plan (calibrated with it by ``tools/cache_calibrate.py``)
CALIBRATED_EXTRAPOLATE: dict[int, float] = {
    50: 0.5,
    25: 0.5,
}
PLANS = ("adaptive", "calibrated")  # the ``plan`` argument of ``CachedDenoiser`` / ``pipeline.sample``


def _nearest_calibrated(num_steps: int) -> int:
    return min(CALIBRATED_PHASES, key=lambda n: (abs(n - num_steps), n))


def calibrated_phases(num_steps: int) -> Phases:
    """The calibrated plan of the step count nearest ``num_steps``."""
    return CALIBRATED_PHASES[_nearest_calibrated(num_steps)]


def calibrated_extrapolate(num_steps: int) -> float:
    """The calibrated ``extrapolate`` of the step count nearest ``num_steps``."""
    return CALIBRATED_EXTRAPOLATE.get(_nearest_calibrated(num_steps), 0.0)


class StepCache:
    """The cache state of one sampling run; a ``CogVideoXTransformer.step_cache`` callable.

    ``threshold``: accumulated relative L1 change below which a step reuses the residual
    (0 = never skip). ``rescale``: polynomial coefficients (highest power first) applied to the
    relative change before accumulating, or None for the raw change. ``start``: the fraction of
    the steps at the beginning that always run (at least the first step). ``max_skips``: the most
    steps in a row that reuse one residual (None = no limit). ``phases`` (replaces ``start`` and
    ``max_skips``): ``((fraction, max_skips), ...)`` in increasing fraction: from step
    ``ceil(fraction * num_steps)`` on, at most ``max_skips`` in a row; no skip before the first.
    ``extrapolate`` in [0, 1]: a skipped step moves the reused residual that share of the way along
    the line through the last two computed residuals (0 = plain reuse; 1 = linear extrapolation,
    TaylorSeer-like; in between a damped step, which beats both on the tiny model). It keeps one
    more residual (the size of the block stack's video output) while sampling.
    """

    def __init__(
        self,
        threshold: float,
        num_steps: int,
        rescale: Sequence[float] | None = None,
        start: float = DEFAULT_START,
        max_skips: int | None = DEFAULT_MAX_SKIPS,
        phases: Phases | None = None,
        extrapolate: float = 0.0,
    ):
        if threshold < 0:
            raise ValueError(f"cache threshold must be >= 0, got {threshold}")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"cache start must be a fraction of the steps in [0, 1], got {start}")
        self.threshold = float(threshold)
        self.num_steps = num_steps
        if max_skips is not None and max_skips < 1:
            raise ValueError(f"max_skips must be >= 1 or None, got {max_skips}")
        self.warmup = max(1, math.ceil(start * num_steps))  # steps 0 .. warmup-1 always run
        self.max_skips = max_skips
        self.caps: list[int | None] | None = None  # per step: the most skips in a row (phases)
        if phases is not None:
            self.caps = _caps(phases, num_steps)
            self.warmup = 1
        self.in_a_row = 0  # steps skipped since the last computed one
        self.rescale = tuple(rescale) if rescale is not None else None
        self.step = 0
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None  # modulated input of the previous step [B, N, D]
        self.residual: torch.Tensor | None = None  # video out - video in of the last computed step
        self.computed: list[int] = []
        self.skipped: list[int] = []
        if not 0.0 <= extrapolate <= 1.0:
            raise ValueError(f"cache extrapolate must be in [0, 1], got {extrapolate}")
        self.extrapolate = float(extrapolate)
        self.earlier: torch.Tensor | None = None  # the residual of the computed step before the last (extrapolate)

    def _change(self, current: torch.Tensor) -> float:
        prev = self.previous
        rel = ((current - prev).abs().mean() / prev.abs().mean().clamp_min(1e-12)).item()
        if self.rescale is not None:
            rel = sum(c * rel**k for k, c in enumerate(reversed(self.rescale)))
        return abs(rel)

    def should_compute(self, current: torch.Tensor, batch_shape: torch.Size) -> bool:
        edge = self.step < self.warmup or self.step >= self.num_steps - 1
        if edge or self.previous is None or self.residual is None or self.residual.shape != batch_shape:
            return True
        cap = self.max_skips if self.caps is None else self.caps[self.step]
        if cap is not None and self.in_a_row >= cap:
            return True
        self.accumulated += self._change(current)
        return self.accumulated >= self.threshold

    def reused_residual(self) -> torch.Tensor:
        """The residual a skipped step adds: the last computed one, moved ``extrapolate`` of the way
        along the line through the last two computed residuals (``r1 + a * (i - i1) / (i1 - i0) * (r1 - r0)``)."""
        if self.extrapolate == 0.0 or self.earlier is None:
            return self.residual
        i0, i1 = self.computed[-2:]
        a = self.extrapolate * (self.step - i1) / (i1 - i0)
        return torch.lerp(self.residual, self.earlier.to(self.residual.device), -a)  # r1 + a (r1 - r0)

    def __call__(self, model: CogVideoXTransformer, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        current = model.first_block_modulated_input(tokens)  # [B, N, D] float32
        compute = self.should_compute(current, tokens.video.shape)
        self.previous = current
        if not compute:
            self.skipped.append(self.step)
            self.in_a_row += 1
            residual = self.reused_residual().to(tokens.video.device)
            return tokens.video + residual, tokens.text
        self.accumulated = 0.0
        self.in_a_row = 0
        same_batch = self.residual is not None and self.residual.shape == tokens.video.shape
        self.earlier = self.residual if self.extrapolate and same_batch else None
        self.computed.append(self.step)
        video, text = model.run_all_blocks(tokens)
        self.residual = (video - tokens.video.to(video.device)).detach()  # [B, N, D]
        return video, text


def _caps(phases: Phases, num_steps: int) -> list[int]:
    bounds = [f for f, _ in phases]
    if any(not 0.0 <= f <= 1.0 for f in bounds) or bounds != sorted(bounds):
        raise ValueError(f"cache phases must start at increasing fractions in [0, 1], got {phases}")
    if any(k < 0 for _, k in phases):
        raise ValueError(f"cache phases need max_skips >= 0, got {phases}")
    caps = [0] * num_steps
    for fraction, k in phases:
        for i in range(math.ceil(fraction * num_steps), num_steps):
            caps[i] = k
    return caps


class CachedDenoiser(Denoiser):
    """A ``Denoiser`` whose network calls go through a ``StepCache`` (see the module docstring).

    The model must be a ``CogVideoXTransformer``: the cache needs its staged forward. The
    cache is installed on ``model.step_cache`` for the duration of each call only. ``plan``:
    "adaptive" (``start`` and ``max_skips``, plain reuse) or "calibrated" (``calibrated_phases`` and
    ``calibrated_extrapolate`` of the step count); explicit ``phases`` / ``extrapolate`` (see
    ``StepCache``) override the plan's.
    """

    def __init__(
        self,
        *args,
        threshold: float,
        rescale: Sequence[float] | None = None,
        start: float = DEFAULT_START,
        max_skips: int | None = DEFAULT_MAX_SKIPS,
        plan: str = "adaptive",
        phases: Phases | None = None,
        extrapolate: float | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, CogVideoXTransformer):
            raise TypeError(f"step caching needs a CogVideoXTransformer, got {type(self.model).__name__}")
        if plan not in PLANS:
            raise ValueError(f"unknown cache plan {plan!r}; one of {list(PLANS)}")
        n = len(self.schedule)
        if phases is None and plan == "calibrated":
            phases = calibrated_phases(n)
        if extrapolate is None:
            extrapolate = calibrated_extrapolate(n) if plan == "calibrated" else 0.0
        self.cache = StepCache(threshold, n, rescale, start, max_skips, phases, extrapolate)

    def velocity(self, x: torch.Tensor, i: int) -> torch.Tensor:
        self.cache.step = i
        model = self.model
        previous_hook = model.step_cache
        model.step_cache = self.cache
        try:
            return super().velocity(x, i)
        finally:
            model.step_cache = previous_hook

    def report(self) -> str:
        c = self.cache
        return f"step cache: ran {len(c.computed)} of {len(c.computed) + len(c.skipped)} steps (skipped {c.skipped})"
