"""Schedules against the reference CogVideoX schedulers (diffusers is the oracle)."""

import math

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from cogvideox import schedules
from cogvideox.configs import SchedulerConfig


def _reference(cls, config: SchedulerConfig):
    return cls(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        set_alpha_to_one=config.set_alpha_to_one,
        steps_offset=config.steps_offset,
        prediction_type=config.prediction_type,
        timestep_spacing=config.timestep_spacing,
        rescale_betas_zero_snr=config.rescale_betas_zero_snr,
        snr_shift_scale=config.snr_shift_scale,
        clip_sample=False,
    )


@pytest.mark.parametrize("cls", [CogVideoXDDIMScheduler, CogVideoXDPMScheduler])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("zero_snr", [True, False])
def test_alphas_cumprod_equal_reference(cls, shift, zero_snr):
    config = SchedulerConfig(snr_shift_scale=shift, rescale_betas_zero_snr=zero_snr)
    ref = _reference(cls, config).alphas_cumprod
    ours = schedules.alphas_cumprod(config)
    assert ours.dtype == torch.float64
    assert torch.equal(ours, ref)
    if zero_snr:
        assert ours[-1] == 0.0
        assert math.isinf(float(schedules.to_sigmas(ours[-1:])[0]))


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_timesteps_equal_reference(spacing):
    config = SchedulerConfig(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    ref = _reference(CogVideoXDPMScheduler, config)
    for steps in [1, 2, 3, 7, 10, 25, 30, 33, 50, 51, 99, 250, 1000]:
        ref.set_timesteps(steps)
        ours = schedules.spaced_timesteps(config, steps)
        assert torch.equal(ours, ref.timesteps), (spacing, steps)


def test_snr_shift_divides_snr():
    a = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    shifted = schedules.shift_snr(a, 3.0)
    assert torch.allclose(shifted / (1 - shifted), a / (1 - a) / 3.0)


def test_strength_start_matches_reference_get_timesteps():
    for steps in [10, 50]:
        for denoise in [0.0, 0.05, 0.3, 0.5, 0.8, 0.99, 1.0]:
            init = min(int(steps * denoise), steps)
            assert schedules.start_index(steps, denoise) == max(steps - init, 0)
    with pytest.raises(ValueError):
        schedules.start_index(10, 1.5)


def test_schedule_cut_and_targets():
    config = SchedulerConfig()
    full = schedules.make_schedule(config, 30)
    cut = schedules.make_schedule(config, 30, denoise=0.5)
    assert len(full) == 30 and len(cut) == 15
    assert torch.equal(cut.timesteps, full.timesteps[15:])
    # the reference target is t - 1000 // 30 = t - 33, not the next timestep
    assert int(full.ref_prev[1]) == int(full.timesteps[1]) - 33
    assert int(full.ref_prev[1]) != int(full.timesteps[2])
    sig = full.sigmas
    assert math.isinf(float(sig[0])) and float(sig[-1]) == 0.0
    assert torch.all(sig[1:] < sig[:-1])
    assert full.is_ref_last(29) and not full.is_ref_last(28)


def test_add_noise_matches_reference():
    config = SchedulerConfig(snr_shift_scale=1.0)
    ref = _reference(CogVideoXDPMScheduler, config)
    x0, noise = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    t = 600
    ours = schedules.add_noise(x0, noise, schedules.alphas_cumprod(config)[t])
    expected = ref.add_noise(x0, noise, torch.tensor([t, t]))
    assert (ours - expected).abs().max() < 1e-6
