"""Conditioning helpers and the pipeline's contract (errors, callbacks, padding, seeds)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cogvideox.conditioning import i2v_condition, image_latent, noise_augment
from cogvideox.configs import VARIANTS, TransformerConfig
from cogvideox.pipeline import sample

torch.set_num_threads(1)


# --------------------------------------------------------------------------- conditioning
def test_noise_augment_auto_draws_lognormal_sigma_per_sample():
    image = torch.zeros(2000, 3, 1, 4, 4)
    out = noise_augment(image, "auto", torch.Generator().manual_seed(0))
    sigmas = out.flatten(1).std(dim=1)  # per-sample noise level
    logs = sigmas.log()
    assert abs(float(logs.mean()) - (-3.0)) < 0.05
    assert abs(float(logs.std()) - 0.5) < 0.05
    again = noise_augment(image, "auto", torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_noise_augment_fixed_sigma_and_zero():
    image = torch.rand(4, 3, 2, 8, 8) * 2 - 1
    assert noise_augment(image, 0.0) is image
    out = noise_augment(image, 0.1, torch.Generator().manual_seed(1))
    assert abs(float((out - image).std()) - 0.1) < 0.01
    with pytest.raises(ValueError):
        noise_augment(image, -1.0)
    with pytest.raises(ValueError):
        noise_augment(image, "high")


class _FakeVAE:
    """Spatial 2x average pool to 16 channels; records calls; samples add generator noise."""

    def __init__(self):
        self.calls = []

    def encode(self, x, *, sample=False, generator=None):
        self.calls.append((tuple(x.shape), sample))
        mean = torch.nn.functional.avg_pool3d(x, (1, 2, 2)).repeat(1, 6, 1, 1, 1)[:, :16]
        if sample:
            mean = mean + 0.1 * torch.randn(mean.shape, generator=generator)
        return mean


def test_image_latent_encodes_one_sample_at_a_time():
    vae = _FakeVAE()
    image = torch.rand(3, 3, 1, 8, 10) * 2 - 1
    mean = image_latent(vae, image)
    assert mean.shape == (3, 16, 1, 4, 5)
    assert vae.calls == [((1, 3, 1, 8, 10), False)] * 3
    drawn = image_latent(vae, image, generator=torch.Generator().manual_seed(0))
    assert vae.calls[-1] == ((1, 3, 1, 8, 10), True)
    assert 0.01 < float((drawn - mean).abs().mean()) < 0.2
    with pytest.raises(ValueError):
        image_latent(vae, torch.rand(1, 4, 1, 8, 8))


def test_i2v_condition_zero_pads_after_the_image():
    lat = torch.randn(2, 16, 1, 3, 4)
    cond = i2v_condition(lat, 5)
    assert cond.shape == (2, 16, 5, 3, 4)
    assert torch.equal(cond[:, :, :1], lat)
    assert cond[:, :, 1:].abs().max() == 0
    with pytest.raises(ValueError):
        i2v_condition(torch.randn(1, 16, 3, 2, 2), 2)


# --------------------------------------------------------------------------- pipeline contract
class _Toy(torch.nn.Module):
    """A cheap stand-in with the transformer's signature; records its inputs."""

    def __init__(self, value: float | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))
        self.value = value
        self.inputs = []

    def forward(self, x, timestep, context, ofs=None):
        self.inputs.append((x.clone(), timestep.clone(), context.shape))
        out = self.w * torch.tanh(x[:, :16]) + context.mean() * 0.01
        if self.value is not None:
            out = out * self.value
        return out


def _variant(name="5b", **changes):
    base = VARIANTS[name]
    tcfg = dataclasses.replace(base.transformer, **changes) if changes else base.transformer
    return dataclasses.replace(base, transformer=tcfg)


def _text(batch=1):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 5, 8, generator=g), torch.randn(batch, 5, 8, generator=g)


def test_nan_output_raises_floating_point_error_naming_the_step():
    pos, neg = _text()
    with pytest.raises(FloatingPointError, match=r"step 1/4.*bfloat16"):
        sample(_Toy(math.nan), _variant(), torch.zeros(1, 16, 2, 4, 4), pos, neg, steps=4, cfg=6.0)


def test_callback_exception_propagates_and_stops_the_run():
    pos, neg = _text()
    model = _Toy()
    seen = []

    def callback(i, n, x0):
        seen.append((i, n))
        if i == 1:
            raise InterruptedError("user stop")

    with pytest.raises(InterruptedError):
        sample(model, _variant(), torch.zeros(1, 16, 2, 4, 4), pos, neg, steps=5, cfg=6.0, callback=callback)
    assert seen == [(0, 5), (1, 5)]
    assert len(model.inputs) == 2


def test_guidance_batches_and_no_guidance_runs_once():
    pos, neg = _text(1)
    model = _Toy()
    sample(model, _variant(), torch.zeros(2, 16, 2, 4, 4), pos, neg, steps=2, cfg=6.0)
    assert model.inputs[0][0].shape[0] == 4 and model.inputs[0][2][0] == 4  # [uncond x2, cond x2]
    model = _Toy()
    sample(model, _variant(), torch.zeros(2, 16, 2, 4, 4), pos, None, steps=2, cfg=1.0)
    assert model.inputs[0][0].shape[0] == 2
    with pytest.raises(ValueError, match="negative"):
        sample(_Toy(), _variant(), torch.zeros(1, 16, 2, 4, 4), pos, None, steps=2, cfg=6.0)


def test_seed_reproduces_and_differs():
    pos, neg = _text()
    lat = torch.zeros(1, 16, 2, 4, 4)
    a = sample(_Toy(), _variant(), lat, pos, neg, steps=3, cfg=6.0, seed=1)
    b = sample(_Toy(), _variant(), lat, pos, neg, steps=3, cfg=6.0, seed=1)
    c = sample(_Toy(), _variant(), lat, pos, neg, steps=3, cfg=6.0, seed=2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["ddim", "dpm", "euler", "dpmpp_2m", "auto"])
def test_every_sampler_runs_and_returns_raw_latent_shape(sampler):
    pos, neg = _text()
    out = sample(_Toy(), _variant("2b"), torch.zeros(1, 16, 3, 4, 4), pos, neg, steps=3, cfg=5.0, sampler=sampler)
    assert out.shape == (1, 16, 3, 4, 4) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(_Toy(), _variant(), torch.zeros(1, 16, 3, 4, 4), pos, neg, steps=3, cfg=5.0, sampler="lms")


def test_1_5_video_to_video_pads_with_a_copy_of_the_first_frame():
    variant = _variant("1.5-5b")
    assert variant.transformer.patch_size_t == 2
    pos, neg = _text()
    latent = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    model = _Toy()
    out = sample(model, variant, latent, pos, neg, steps=10, cfg=6.0, noise=noise, denoise=0.5)
    x = model.inputs[0][0]
    assert x.shape == (2, 16, 4, 4, 4)  # odd 3 frames padded to 4
    assert torch.equal(x[:, :, 0], x[:, :, 1])  # the pad is frame 0 (latent and noise) repeated
    assert out.shape == (1, 16, 3, 4, 4)


def test_denoise_zero_returns_the_input_and_wrong_inputs_raise():
    pos, neg = _text()
    lat = torch.randn(1, 16, 2, 4, 4)
    out = sample(_Toy(), _variant(), lat, pos, neg, steps=10, cfg=6.0, denoise=0.05)
    assert torch.equal(out, lat)
    with pytest.raises(ValueError, match="image_latent"):
        sample(_Toy(), _variant("5b-i2v"), lat, pos, neg, steps=2, cfg=6.0)
    with pytest.raises(ValueError, match="image_latent"):
        sample(_Toy(), _variant(), lat, pos, neg, steps=2, cfg=6.0, image_latent=lat[:, :, :1])
    with pytest.raises(ValueError, match="noise shape"):
        sample(_Toy(), _variant(), lat, pos, neg, steps=2, cfg=6.0, noise=torch.randn(1, 16, 5, 4, 4))


def test_i2v_1_0_scales_image_latent_by_scaling_factor():
    variant = _variant("5b-i2v")
    pos, neg = _text()
    raw = torch.randn(1, 16, 1, 4, 4)
    model = _Toy()
    sample(model, variant, torch.zeros(1, 16, 3, 4, 4), pos, neg, steps=2, cfg=6.0, image_latent=raw)
    x = model.inputs[0][0]
    assert x.shape == (2, 32, 3, 4, 4)
    assert torch.allclose(x[0, 16:, 0], raw[0, :, 0] * variant.scaling_factor)
    assert isinstance(variant.transformer, TransformerConfig)
