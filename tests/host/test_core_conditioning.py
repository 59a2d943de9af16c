"""Core conditioning and latent options on CogVideoX Sampler, through the real host: what the
pack's sampler does not apply is refused with a message that names the core node and what to
use instead, never silently dropped (it used to ignore timestep ranges and noise masks and keep
only the first of several prompts); neutral settings still run."""

from __future__ import annotations

import pytest
from harness import reliability_models as rm
from harness.reliability import assert_clear_error, t2v_graph
from harness.reliability_links import failed, saved_videos

pytestmark = pytest.mark.host

SAMPLER, SAMPLER_NAME = "CogVideoXSampler", "CogVideoX Sampler"
INSTEAD = "CogVideoX Model Loader's MODEL output with core KSampler"


@pytest.fixture
def client(comfy_host, comfy_client):
    rm.ensure_models(comfy_host.base_dir / "models")
    return comfy_client


def _on_positive(node: dict, prefix: str) -> dict:
    """The T2V graph with ``node`` (id 20, reading CogVideoX Text Encode "2") feeding the positive."""
    api = t2v_graph(prefix=prefix)
    api["20"] = node
    api["8"]["inputs"]["positive"] = ["20", 0]
    return api


MASK = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}

REFUSED = [
    ("timestep-range", {"class_type": "ConditioningSetTimestepRange",
                        "inputs": {"conditioning": ["2", 0], "start": 0.0, "end": 0.5}},
     ["timestep range (ConditioningSetTimestepRange)", "positive"]),
    ("combine", {"class_type": "ConditioningCombine",
                 "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["3", 0]}},
     ["holds 2 prompts (ConditioningCombine", "uses exactly one", "weights several prompts"]),
    ("area", {"class_type": "ConditioningSetArea",
              "inputs": {"conditioning": ["2", 0], "width": 64, "height": 64, "x": 0, "y": 0, "strength": 1.0}},
     ["an area (ConditioningSetArea)"]),
    ("mask", {"class_type": "ConditioningSetMask",
              "inputs": {"conditioning": ["2", 0], "mask": ["21", 0], "strength": 1.0, "set_cond_area": "default"}},
     ["a mask (ConditioningSetMask)"]),
]


@pytest.mark.parametrize(("node", "needles"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_core_conditioning_options_are_refused_with_what_to_use(client, node, needles):
    api = _on_positive(node, prefix="rel2/cond/refused")
    api["21"] = MASK
    message = assert_clear_error(failed(client, api), SAMPLER, SAMPLER_NAME, *needles)
    assert INSTEAD in message or "CogVideoX Text Encode" in message, message


def test_latent_noise_mask_is_refused(client):
    api = t2v_graph(prefix="rel2/cond/noise_mask")
    api["21"] = MASK
    api["22"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": ["21", 0]}}
    api["8"]["inputs"]["latent"] = ["22", 0]
    assert_clear_error(failed(client, api), SAMPLER, SAMPLER_NAME, "noise mask (SetLatentNoiseMask)", INSTEAD)


def test_concat_on_one_side_names_the_text_encoder(client):
    api = _on_positive({"class_type": "ConditioningConcat",
                        "inputs": {"conditioning_to": ["2", 0], "conditioning_from": ["3", 0]}},
                       prefix="rel2/cond/concat")
    assert_clear_error(
        failed(client, api), SAMPLER, SAMPLER_NAME, "positive conditioning has 452 text tokens",
        "exactly 226", "CogVideoX Text Encode", "ConditioningConcat",
    )


def test_the_full_timestep_range_changes_nothing_and_runs(client):
    """start 0 / end 1 is core's no-op: the video equals the one without the node."""
    api = _on_positive({"class_type": "ConditioningSetTimestepRange",
                        "inputs": {"conditioning": ["2", 0], "start": 0.0, "end": 1.0}},
                       prefix="rel2/cond/full_range")
    entry = client.run(api, timeout=300)
    ((_, info, _),) = saved_videos(client, entry)
    assert info.frames == rm.FRAMES
