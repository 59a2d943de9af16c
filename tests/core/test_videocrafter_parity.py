"""VideoCrafter against the reference ``lvdm`` code: golden fixtures written by
tools/make_videocrafter_fixtures.py (tiny random configurations of every released variant).

Our modules get the same random weights (drawn in sorted parameter-name order, so identical
names and shapes give identical weights) and must reproduce the reference's U-Net output, image
resampler output, schedule tables and full DDIM sampling (eta 0 and 1, guidance, fps, use_scale).
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from cogvideox.samplers import randn_noise
from tools.make_videocrafter_fixtures import (
    CONFIG_FILES,
    TINY_RESAMPLER,
    randomize,
    tiny_unet_config,
    unet_key_list,
)
from videocrafter import schedule as vc_schedule
from videocrafter.configs import VARIANTS, detect_variant, unet_config_from_weights
from videocrafter.resampler import Resampler
from videocrafter.sampling import guided_predictor, sample_ddim
from videocrafter.unet import VideoCrafterUNet

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "videocrafter"
VARIANT_NAMES = list(CONFIG_FILES)


def _load(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURES / f"{name}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module", params=VARIANT_NAMES)
def case(request):
    name = request.param
    tensors, meta = _load(name)
    unet = VideoCrafterUNet(tiny_unet_config(name)).eval()
    randomize(unet, int(meta["seed"]))
    return name, tensors, meta, unet


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def test_weight_names_and_shapes_match_reference(case):
    name, _, meta, unet = case
    digest = hashlib.sha256("\n".join(unet_key_list(unet)).encode()).hexdigest()
    assert digest == meta["unet_keys_sha256"], f"{name}: parameter names or shapes differ from the reference U-Net"


def test_variant_detected_from_weights(case):
    name, _, _, unet = case
    assert detect_variant(unet.state_dict().keys()).name == name


def test_unet_matches_reference(case):
    name, t, _, unet = case
    context = t["text"]
    if VARIANTS[name].image_to_video:
        context = torch.cat([context, t["unet_image_context"]], dim=1)
    with torch.no_grad():
        out = unet(t["x"], t["t"], context, fps=t["fps"])
    assert t["unet_out"].abs().max().item() > 0.5  # the fixture is not degenerate
    assert _max_err(out, t["unet_out"]) < 1e-4


def test_unet_inputs_matter(case):
    """The comparison above can fail: fps (when conditioned), context and timestep change the output."""
    name, t, _, unet = case
    context = t["text"]
    if VARIANTS[name].image_to_video:
        context = torch.cat([context, t["unet_image_context"]], dim=1)
    with torch.no_grad():
        base = unet(t["x"], t["t"], context, fps=t["fps"])
        other_fps = unet(t["x"], t["t"], context, fps=t["fps"] + 4)
        if VARIANTS[name].image_to_video:
            no_image = unet(t["x"], t["t"], torch.cat([t["text"], 0 * t["unet_image_context"]], dim=1), fps=t["fps"])
            assert _max_err(base, no_image) > 1e-3
    assert (_max_err(base, other_fps) > 1e-3) == VARIANTS[name].unet.fps_cond


def test_schedule_tables_match_reference(case):
    name, t, _, _ = case
    config = VARIANTS[name].schedule
    assert _max_err(vc_schedule.alphas_cumprod(config), t["alphas_cumprod"]) == 0.0
    if config.use_scale:
        assert _max_err(vc_schedule.scale_table(config), t["scale_arr"]) == 0.0
    else:
        assert "scale_arr" not in t


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sampling_matches_reference(case, eta):
    name, t, meta, unet = case
    runs = {run[0]: run for run in json.loads(meta["ddim_runs"])}
    _, steps, seed = runs[eta]
    cond, uncond = t["text"], t["uncond_text"]
    if VARIANTS[name].image_to_video:
        cond = torch.cat([cond, t["resampler_out"]], dim=1)
        uncond = torch.cat([uncond, t["uncond_resampler_out"]], dim=1)
    sched = vc_schedule.make_ddim_schedule(VARIANTS[name].schedule, steps, eta)
    assert torch.equal(sched.timesteps.flip(0), t[f"ddim_eta{eta:g}_timesteps"])
    predict = guided_predictor(unet, cond, uncond, float(meta["cfg"]), fps=t["fps"])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = sample_ddim(predict, t["x"].clone(), sched, noise_sampler=randn_noise(generator))
    expected = t[f"ddim_eta{eta:g}_out"]
    # A random U-Net does not predict the noise, so its latents grow to |x| ~ 20-400 over the run
    # (x0 = x / sqrt(abar) at the first, noisiest step); float32 resolution there is ~1e-5 |x|,
    # so the bound is relative to the peak: 2e-5 (measured 3-4e-6; a wrong scale or eta gives ~1).
    peak = expected.abs().max().item()
    assert _max_err(out, expected) < 2e-5 * peak


def test_resampler_matches_reference():
    t, meta = _load("i2v-512-v1.0")
    resampler = randomize(Resampler(TINY_RESAMPLER), int(meta["seed"]) + 1).eval()
    with torch.no_grad():
        out = resampler(t["image_tokens"])
        uncond = resampler(t["uncond_image_tokens"])
    assert out.shape == (2, TINY_RESAMPLER.num_queries, TINY_RESAMPLER.output_dim)
    assert _max_err(out, t["resampler_out"]) < 1e-5
    assert _max_err(uncond, t["uncond_resampler_out"]) < 1e-5
    assert _max_err(out, uncond) > 1e-2


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_sizes_read_from_weights(name):
    tiny = tiny_unet_config(name)
    state = VideoCrafterUNet(tiny).state_dict()
    shapes = {k: tuple(state[k].shape) for k in sorted(state)}  # a file's order, not the module's
    read = unet_config_from_weights(shapes, VARIANTS[name].unet)
    assert set(read.attention_resolutions) == set(tiny.attention_resolutions)
    if not tiny.use_relative_position:  # only relative-position tables use (and reveal) temporal_length
        read = read.replace(temporal_length=tiny.temporal_length)
    assert read.replace(attention_resolutions=tiny.attention_resolutions) == tiny
    with torch.device("meta"):  # the released sizes, without allocating 1.4B parameters
        released = {k: tuple(v.shape) for k, v in VideoCrafterUNet(VARIANTS[name].unet).state_dict().items()}
    assert unet_config_from_weights(released, VARIANTS[name].unet) == VARIANTS[name].unet


def test_ddim_step_counts_like_the_reference():
    config = VARIANTS["t2v-512-v2.0"].schedule
    assert vc_schedule.ddim_timesteps(config, 50).tolist() == list(range(1, 1000, 20))
    assert len(vc_schedule.ddim_timesteps(config, 7)) == 8  # 1000 // 7 = 142 apart: 0..994
    for steps in (3, 9, 27):  # 1000 // steps divides 999: the reference would index t = 1000
        with pytest.raises(ValueError, match="past its 1000-entry"):
            vc_schedule.ddim_timesteps(config, steps)


def test_unet_runs_in_bfloat16():
    """Weights and activations in bf16 (norms in float32): close to the float32 reference, same dtype out."""
    name = "i2v-512-v1.0"
    t, meta = _load(name)
    unet = randomize(VideoCrafterUNet(tiny_unet_config(name)), int(meta["seed"])).eval().to(torch.bfloat16)
    context = torch.cat([t["text"], t["unet_image_context"]], dim=1)
    with torch.no_grad():
        out = unet(t["x"].bfloat16(), t["t"], context, fps=t["fps"])
    assert out.dtype == torch.bfloat16
    expected = t["unet_out"]
    assert _max_err(out, expected) < 0.05 * expected.abs().max().item()
