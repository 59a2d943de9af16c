"""Step caching (cogvideox/cache.py): threshold 0 is exact, a positive threshold skips and stays close."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cogvideox.cache import CachedDenoiser, StepCache
from cogvideox.configs import VARIANTS
from cogvideox.pipeline import Denoiser, sample
from cogvideox.samplers import SAMPLERS, frames_first_noise
from cogvideox.schedules import make_schedule
from cogvideox.transformer import CogVideoXTransformer

torch.set_num_threads(1)
STEPS = 20


@pytest.fixture(scope="module")
def setup(tiny_transformer_configs, randomize):
    cfg = tiny_transformer_configs["5b"]
    model = randomize(CogVideoXTransformer(cfg).eval(), seed=3, std=0.05)
    variant = dataclasses.replace(VARIANTS["5b"], transformer=cfg)
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    neg = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    return model, variant, torch.zeros(1, 16, 3, 8, 12), pos, neg


def _run(setup, threshold, steps=STEPS):
    model, variant, latent, pos, neg = setup
    return sample(model, variant, latent, pos, neg, steps=steps, cfg=6.0, seed=1, cache_threshold=threshold)


def _run_denoiser(setup, denoiser_cls, **extra):
    """Drive the solver directly so the cache object can be inspected."""
    model, variant, latent, pos, neg = setup
    schedule = make_schedule(variant.scheduler_config(), STEPS, 1.0)
    denoiser = denoiser_cls(model, schedule, pos, neg, cfg=6.0, **extra)
    noise_sampler = frames_first_noise(torch.Generator().manual_seed(1))
    x = noise_sampler(latent)
    with torch.no_grad():
        out = SAMPLERS["dpm"](denoiser, x, schedule, noise_sampler=noise_sampler, callback=None)
    return out, denoiser


def test_threshold_zero_is_the_uncached_run(setup):
    plain = _run(setup, 0.0)
    assert torch.equal(plain, _run(setup, 0.0))
    # the cache path itself with threshold 0 computes every step and matches exactly
    ref, _ = _run_denoiser(setup, Denoiser)
    cached, denoiser = _run_denoiser(setup, CachedDenoiser, threshold=0.0)
    assert torch.equal(ref, cached)
    assert denoiser.cache.skipped == []
    assert denoiser.cache.computed == list(range(STEPS))
    assert setup[0].step_cache is None  # the hook is only installed during calls


def test_positive_threshold_skips_and_stays_close(setup):
    ref, _ = _run_denoiser(setup, Denoiser)
    cached, denoiser = _run_denoiser(setup, CachedDenoiser, threshold=0.3)
    cache = denoiser.cache
    assert cache.skipped, "a positive threshold should skip some steps"
    assert 0 in cache.computed and STEPS - 1 in cache.computed  # first and last always run
    assert len(cache.computed) + len(cache.skipped) == STEPS
    rel = ((cached - ref).norm() / ref.norm()).item()
    assert rel < 0.02, f"cached run drifted: relative error {rel:.3f}"
    # a larger threshold skips at least as much
    _, bigger = _run_denoiser(setup, CachedDenoiser, threshold=1.0)
    assert len(bigger.cache.skipped) >= len(cache.skipped)


def test_warm_up_steps_always_run_and_skips_in_a_row_are_capped(setup):
    _, denoiser = _run_denoiser(setup, CachedDenoiser, threshold=100.0, start=0.25, max_skips=2)
    cache = denoiser.cache
    warmup = 5  # ceil(0.25 * 20)
    assert cache.computed[:warmup] == list(range(warmup))
    assert min(cache.skipped) == warmup  # a threshold this high skips whenever it may
    # never more than 2 skipped steps between two computed ones
    assert all(b - a - 1 <= 2 for a, b in zip(cache.computed, cache.computed[1:], strict=False))
    assert cache.skipped == [5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
    _, uncapped = _run_denoiser(setup, CachedDenoiser, threshold=100.0, start=0.25, max_skips=None)
    assert uncapped.cache.computed == [0, 1, 2, 3, 4, STEPS - 1]


def test_sample_accepts_cache_threshold(setup):
    out = _run(setup, 0.3)
    assert out.shape == setup[2].shape and torch.isfinite(out).all()


def test_cache_rules():
    with pytest.raises(ValueError, match=">= 0"):
        StepCache(-0.1, 10)
    with pytest.raises(ValueError, match="fraction"):
        StepCache(0.1, 10, start=1.5)
    with pytest.raises(ValueError, match="max_skips"):
        StepCache(0.1, 10, max_skips=0)
    with pytest.raises(TypeError, match="CogVideoXTransformer"):
        schedule = make_schedule(VARIANTS["5b"].scheduler_config(), 4, 1.0)
        CachedDenoiser(lambda *a, **k: None, schedule, torch.zeros(1, 2, 3), None, cfg=1.0, threshold=0.1)


def test_phases_cap_skips_per_phase(setup):
    """((0.25, 1), (0.5, 3)): nothing skipped before step 5, then 1 in a row, from step 10 on 3 in a row."""
    _, denoiser = _run_denoiser(setup, CachedDenoiser, threshold=100.0, phases=((0.25, 1), (0.5, 3)))
    cache = denoiser.cache
    assert cache.skipped == [5, 7, 9, 10, 11, 13, 14, 15, 17, 18]
    assert cache.computed == [0, 1, 2, 3, 4, 6, 8, 12, 16, STEPS - 1]


def test_calibrated_plan_uses_the_nearest_calibrated_step_count(setup):
    from cogvideox.cache import CALIBRATED_PHASES, calibrated_phases

    _, denoiser = _run_denoiser(setup, CachedDenoiser, threshold=100.0, plan="calibrated")
    phases = calibrated_phases(STEPS)
    assert phases == CALIBRATED_PHASES[min(CALIBRATED_PHASES, key=lambda n: abs(n - STEPS))]
    first = math.ceil(phases[0][0] * STEPS)
    cache = denoiser.cache
    assert cache.computed[:first] == list(range(first)) and cache.skipped and min(cache.skipped) == first
    runs = [b - a - 1 for a, b in zip(cache.computed, cache.computed[1:], strict=False)]
    assert max(runs) <= max(k for _, k in phases)
    with pytest.raises(ValueError, match="cache plan"):
        _run_denoiser(setup, CachedDenoiser, threshold=0.5, plan="fastest")
    with pytest.raises(ValueError, match="increasing fractions"):
        StepCache(0.1, 10, phases=((0.5, 1), (0.2, 2)))
    with pytest.raises(ValueError, match="max_skips >= 0"):
        StepCache(0.1, 10, phases=((0.5, -1),))


def test_extrapolate_moves_the_reused_residual_along_the_last_two(setup):
    """extrapolate a: a skipped step adds r1 + a * (i - i1) / (i1 - i0) * (r1 - r0) (r0, r1 the residuals of
    the last two computed steps i0 < i1); 0 is plain reuse; the calibrated plan carries its own factor."""
    from cogvideox.cache import calibrated_extrapolate

    model = setup[0]
    plain_out, plain = _run_denoiser(setup, CachedDenoiser, threshold=100.0, phases=((0.25, 2),))
    seen = []

    class Spy(StepCache):
        def reused_residual(self):
            r = super().reused_residual()
            seen.append((self.step, self.computed[-2:], self.earlier, self.residual, r))
            return r

    schedule = make_schedule(setup[1].scheduler_config(), STEPS, 1.0)
    den = CachedDenoiser(model, schedule, setup[3], setup[4], cfg=6.0, threshold=100.0, phases=((0.25, 2),),
                         extrapolate=0.5)
    den.cache = Spy(100.0, STEPS, phases=((0.25, 2),), extrapolate=0.5)
    noise = frames_first_noise(torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = SAMPLERS["dpm"](den, noise(setup[2]), schedule, noise_sampler=noise, callback=None)
    assert den.cache.skipped == plain.cache.skipped and seen
    for step, (i0, i1), r0, r1, used in seen:
        torch.testing.assert_close(used, r1 + 0.5 * (step - i1) / (i1 - i0) * (r1 - r0))
    assert (out - plain_out).abs().max() > 1e-4  # a different run than plain reuse
    assert plain.cache.extrapolate == 0.0
    _, calibrated = _run_denoiser(setup, CachedDenoiser, threshold=100.0, plan="calibrated")
    assert calibrated.cache.extrapolate == calibrated_extrapolate(STEPS)
    with pytest.raises(ValueError, match="extrapolate"):
        StepCache(0.1, 10, extrapolate=1.5)
