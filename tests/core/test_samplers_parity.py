"""Solvers: every step of DDIM and CogVideoX-DPM against the reference schedulers (oracle),
and convergence of Euler / DPM++ 2M / DPM on a Gaussian whose exact denoiser is known."""

import math

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from cogvideox import samplers, schedules
from cogvideox.configs import SchedulerConfig

torch.set_num_threads(1)

SHAPE = (1, 4, 3, 4, 6)  # [B, C, T, h, w]


def _reference(cls, config):
    return cls(
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=config.snr_shift_scale,
        clip_sample=False,
    )


def _fake_v(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic nonlinear stand-in for a network's v-prediction."""
    return 0.7 * torch.tanh(1.3 * x) + 0.1 * math.sin(t / 97.0) + 0.05 * x.roll(1, dims=-1)


def _ours(name, config, steps, x, generator, denoise=1.0):
    schedule = schedules.make_schedule(config, steps, denoise)

    def model(xi, i):
        t = int(schedule.timesteps[i])
        a = schedule.alpha(i)
        return a.sqrt() * xi - (1 - a).sqrt() * _fake_v(xi, t)

    trace = []
    out = samplers.SAMPLERS[name](
        model,
        x.clone(),
        schedule,
        noise_sampler=samplers.frames_first_noise(generator),
        callback=lambda i, xi, x0: trace.append((xi.clone(), x0.clone())),
    )
    return out, trace


def _theirs(cls, config, steps, x, generator, denoise=1.0):
    sched = _reference(cls, config)
    sched.set_timesteps(steps)
    timesteps = sched.timesteps[schedules.start_index(steps, denoise) :]
    lat = x.permute(0, 2, 1, 3, 4).clone()  # [B, T, C, h, w], the reference layout
    old = None
    trace = []
    for i, t in enumerate(timesteps):
        v = _fake_v(lat.permute(0, 2, 1, 3, 4), int(t)).permute(0, 2, 1, 3, 4)
        if cls is CogVideoXDPMScheduler:
            back = timesteps[i - 1] if i > 0 else None
            lat, old = sched.step(v, old, t, back, lat, generator=generator, return_dict=False)
            x0 = old
        else:
            lat, x0 = sched.step(v, t, lat, generator=generator, return_dict=False)
        trace.append((lat.permute(0, 2, 1, 3, 4), x0.permute(0, 2, 1, 3, 4)))
    return lat.permute(0, 2, 1, 3, 4), trace


@pytest.mark.parametrize("name,cls", [("ddim", CogVideoXDDIMScheduler), ("dpm", CogVideoXDPMScheduler)])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps,denoise", [(10, 1.0), (7, 1.0), (12, 0.6)])
def test_reference_solvers_every_step(name, cls, shift, steps, denoise):
    config = SchedulerConfig(snr_shift_scale=shift)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    ours, our_trace = _ours(name, config, steps, x, torch.Generator().manual_seed(11), denoise)
    theirs, their_trace = _theirs(cls, config, steps, x, torch.Generator().manual_seed(11), denoise)
    assert len(our_trace) == len(their_trace) == len(schedules.make_schedule(config, steps, denoise))
    for (xa, x0a), (xb, x0b) in zip(our_trace, their_trace, strict=True):
        assert (xa - xb).abs().max() <= 1e-5
        assert (x0a - x0b).abs().max() <= 1e-5
    assert (ours - theirs).abs().max() <= 1e-5
    assert torch.isfinite(ours).all()


def test_dpm_draws_depend_on_generator():
    config = SchedulerConfig(snr_shift_scale=1.0)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    a, _ = _ours("dpm", config, 6, x, torch.Generator().manual_seed(1))
    b, _ = _ours("dpm", config, 6, x, torch.Generator().manual_seed(2))
    assert (a - b).abs().max() > 1e-3


# --- a 1-D Gaussian data distribution N(0, s^2): the exact denoiser and the exact ODE end point
DATA_STD = 0.5


def _gaussian_denoiser(schedule):
    def model(x, i):
        a = float(schedule.alpha(i))
        return math.sqrt(a) * DATA_STD**2 * x / (a * DATA_STD**2 + 1 - a)

    return model


def _ode_error(name, steps):
    config = SchedulerConfig(snr_shift_scale=1.0)
    schedule = schedules.make_schedule(config, steps)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = samplers.SAMPLERS[name](_gaussian_denoiser(schedule), x.clone(), schedule)
    # the probability-flow ODE maps zero-SNR noise eps to DATA_STD * eps
    return float((out - DATA_STD * x).abs().max())


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "ddim"])
def test_ode_solvers_converge_from_infinite_sigma(name):
    # the first (zero SNR) and last (to sigma 0) steps are first order, so is the overall error
    errors = [_ode_error(name, n) for n in (5, 20, 200)]
    assert all(math.isfinite(e) for e in errors)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.04


def test_dpmpp_2m_beats_euler():
    for steps in (10, 20, 100):
        assert _ode_error("dpmpp_2m", steps) < 0.85 * _ode_error("euler", steps)
    assert _ode_error("dpmpp_2m", 100) < 0.6 * _ode_error("euler", 100)


def test_euler_equals_ddim_when_steps_divide_1000():
    config = SchedulerConfig(snr_shift_scale=3.0)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    a, _ = _ours("euler", config, 10, x, None)
    b, _ = _ours("ddim", config, 10, x, None)
    c, _ = _ours("euler", config, 7, x, None)
    d, _ = _ours("ddim", config, 7, x, None)
    assert (a - b).abs().max() < 1e-6
    assert (c - d).abs().max() > 1e-4  # 7 steps: the reference targets t - 142, not the next timestep


def test_stochastic_dpm_reaches_data_variance():
    config = SchedulerConfig(snr_shift_scale=1.0)
    schedule = schedules.make_schedule(config, 50)
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    out = samplers.sample_cogvideox_dpm(
        _gaussian_denoiser(schedule), x, schedule, noise_sampler=samplers.randn_noise(gen)
    )
    assert abs(float(out.std()) - DATA_STD) < 0.02
    assert float((out - DATA_STD * x).abs().mean()) > 0.05  # it is stochastic, not the ODE map


def test_callback_exceptions_propagate():
    config = SchedulerConfig()
    schedule = schedules.make_schedule(config, 5)

    def stop(i, x, x0):
        if i == 2:
            raise KeyboardInterrupt

    for name, solver in samplers.SAMPLERS.items():
        calls = []

        def model(x, i, calls=calls):
            calls.append(i)
            return 0.5 * x

        with pytest.raises(KeyboardInterrupt):
            solver(
                model,
                torch.zeros(3, dtype=torch.float64),
                schedule,
                callback=stop,
            )
        assert calls == [0, 1, 2], name
