"""Mistakes on the core path (the Model Loader's core MODEL with core nodes), through the real host:
each a clear error that names the node and the fix, and the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import reliability_models as rm
from harness.host import ExecutionFailed, PromptRejected
from harness.reliability import assert_still_serves, execution_error, t2v_graph

pytestmark = pytest.mark.host

CORE_MODEL_SLOT = 2  # CogVideoX Model Loader's appended core MODEL output


@pytest.fixture(scope="module")
def models(comfy_host) -> Path:
    models_dir = comfy_host.base_dir / "models"
    rm.ensure_models(models_dir)
    return models_dir


@pytest.fixture
def client(comfy_client, models):
    yield comfy_client
    assert_still_serves(comfy_client, prefix="core_bad_input/after")


def _ksampler_graph(**ksampler) -> dict:
    """t2v_graph with core KSampler on the core MODEL in place of CogVideoX Sampler (node "8")."""
    api = t2v_graph(prefix="core_bad_input/run")
    api["8"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": ["4", CORE_MODEL_SLOT], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0],
            "seed": 0, "steps": 2, "cfg": 6.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            **ksampler,
        },
    }
    return api


def _failed(client, api) -> tuple[dict, str]:
    with pytest.raises(ExecutionFailed) as failed:
        client.run(api, timeout=300)
    error = execution_error(failed.value)
    message = error["exception_message"]
    # CogVideoXCoreError is the pack's CogVideoXNodeError for errors raised inside core's sampling
    assert error["exception_type"].endswith("CogVideoXCoreError"), (error["exception_type"], message)
    assert "Traceback" not in message and len(message) < 1500, message
    return error, message


def test_core_ksampler_on_the_core_model_runs(client):
    entry = client.run(_ksampler_graph(), timeout=300)
    assert entry["status"]["status_str"] == "success"


def test_an_image_latent_of_another_model_in_core_ksampler(client, comfy_host):
    """A non-empty SD latent (4 channels, 2D; core makes it [1, 4, 1, 8, 8]) is refused before the
    first step. (An empty one is not wrong: core turns zeros into a one-frame 16-channel latent.)"""
    import torch
    from safetensors.torch import save_file

    name = "core_bad_input_sd.latent"
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])},
              str(comfy_host.base_dir / "input" / name))
    api = _ksampler_graph(latent_image=["60", 0])
    api["60"] = {"class_type": "LoadLatent", "inputs": {"latent": name}}
    error, message = _failed(client, api)
    assert error["node_type"] == "KSampler", error
    for needle in ("KSampler", "CogVideoX MODEL", "(1, 4, 1, 8, 8)", "CogVideoX Empty Latent"):
        assert needle in message, message


def test_the_core_model_in_the_pack_sampler_is_rejected_before_running(client):
    """The core MODEL output wired to CogVideoX Sampler (which takes COGVIDEOX_MODEL): a 400 naming the node."""
    api = t2v_graph(prefix="core_bad_input/type")
    api["8"]["inputs"]["model"] = ["4", CORE_MODEL_SLOT]
    with pytest.raises(PromptRejected) as rejected:
        client.queue(api)
    errors = rejected.value.node_errors
    assert errors["8"]["class_type"] == "CogVideoXSampler", errors
    assert any(e["type"] == "return_type_mismatch" for e in errors["8"]["errors"]), errors


def test_a_context_window_longer_than_the_video(client):
    api = _ksampler_graph(model=["70", 0])
    api["70"] = {
        "class_type": "ContextWindowsManual",
        "inputs": {
            "model": ["4", CORE_MODEL_SLOT], "context_length": 5, "context_overlap": 1,
            "context_schedule": "standard_static", "context_stride": 1, "closed_loop": False,
            "fuse_method": "pyramid", "dim": 2,
        },
    }
    error, message = _failed(client, api)
    for needle in ("ContextWindowsManual", "context_length 5 is longer than the video", "3 latent frames", "at most 3"):
        assert needle in message, message


def test_a_unet_patch_on_the_core_model(client):
    """Perturbed-Attention Guidance patches a UNet attention block: refused instead of silently ignored."""
    api = _ksampler_graph(model=["71", 0])
    api["71"] = {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["4", CORE_MODEL_SLOT], "scale": 3.0}}
    error, message = _failed(client, api)
    for needle in ("core patch node", "attn1", "Perturbed-Attention Guidance", "Remove that node"):
        assert needle in message, message


@pytest.mark.parametrize("node", ["FreeU", "FreeU_V2"])
def test_a_unet_only_node_that_reads_unet_settings(client, node):
    """FreeU reads the UNet's model_channels when it runs: a message naming it and the fix, not a
    bare KeyError 'model_channels' from inside core's node."""
    api = _ksampler_graph(model=["72", 0])
    api["72"] = {
        "class_type": node,
        "inputs": {"model": ["4", CORE_MODEL_SLOT], "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2},
    }
    with pytest.raises(ExecutionFailed) as failed:
        client.run(api, timeout=300)
    error = execution_error(failed.value)
    message = error["exception_message"]
    assert error["node_type"] == node, error
    assert error["exception_type"].endswith("UNetSettingError"), (error["exception_type"], message)
    assert "Traceback" not in message and not message.startswith("'"), message
    for needle in ("FreeU", "CogVideoX MODEL", "'model_channels'", "not a UNet", "Remove it"):
        assert needle in message, message
