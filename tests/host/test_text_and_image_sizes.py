"""Conditioning that does not fit the model, through the real host.

Text: CogVideoX reads exactly 226 T5 tokens. Core CLIP Text Encode pads to 77 (or the prompt's
length) and ConditioningConcat doubles the length: every variant, rotary (T2V) or learned
positions (5B-I2V), now refuses both sides alike and names CogVideoX Text Encode (RoPE models
used to accept other lengths silently, learned-position ones said "pad the prompt embeddings").

Image To Video: an image conditioning of another size or batch than the latent used to give a
raw tensor error or an internal name; the message names both nodes and the size to change.
"""

from __future__ import annotations

import re

import pytest
from harness import reliability_models as rm
from harness.reliability import assert_clear_error, i2v_graph, t2v_graph
from harness.reliability_links import failed, saved_videos

pytestmark = pytest.mark.host

SAMPLER, SAMPLER_NAME = "CogVideoXSampler", "CogVideoX Sampler"


@pytest.fixture
def client(comfy_host, comfy_client):
    rm.ensure_models(comfy_host.base_dir / "models")
    return comfy_client


def _core_text_encode(api: dict, node: str) -> dict:
    api[node] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": api[node]["inputs"]["text"]}}
    return api


@pytest.mark.parametrize("node,which", [("2", "positive"), ("3", "negative")])
@pytest.mark.parametrize(
    "make", [lambda: t2v_graph(), lambda: i2v_graph(model=rm.I2V), lambda: i2v_graph(model=rm.I2V_LEARNED)],
    ids=["t2v-rope", "i2v-rope", "i2v-learned-positions"],
)
def test_core_clip_text_encode_is_refused_for_every_variant(client, make, node, which):
    api = _core_text_encode(make(), node)
    message = assert_clear_error(
        failed(client, api), SAMPLER, SAMPLER_NAME, f"the {which} conditioning has 77 text tokens",
        "CogVideoX reads exactly 226", "encode the prompt with CogVideoX Text Encode", "core CLIP Text Encode",
    )
    assert "pad the prompt embeddings" not in message


def test_a_long_prompt_through_core_clip_text_encode_says_its_length(client):
    api = _core_text_encode(t2v_graph(text="a red square moving right " * 30), "2")
    message = assert_clear_error(failed(client, api), SAMPLER, SAMPLER_NAME, "text tokens", "exactly 226")
    tokens = int(re.search(r"has (\d+) text tokens", message).group(1))
    assert 77 < tokens != 226, message


# ---------------------------------------------------------------- Image To Video against the latent
def _i2v_with_own_latent(i2v: dict, latent: dict) -> dict:
    api = i2v_graph(**i2v)
    api["5"] = {"class_type": "CogVideoXEmptyLatent",
                "inputs": {"width": 64, "height": 64, "frames": rm.FRAMES, "batch_size": 1, **latent}}
    api["8"]["inputs"]["latent"] = ["5", 0]
    return api


def test_image_size_other_than_the_latent_names_both_nodes_and_the_size(client):
    api = _i2v_with_own_latent({"width": 128, "height": 128}, {})
    message = assert_clear_error(
        failed(client, api), SAMPLER, SAMPLER_NAME,
        "the image from CogVideoX Image To Video is 128x128", "the latent is 64x64",
        "connect CogVideoX Image To Video's latent output", "CogVideoX Empty Latent the same width and height",
    )
    assert "size of tensor" not in message.lower()


def test_image_batch_other_than_the_latent_names_both_nodes_without_internal_names(client):
    api = _i2v_with_own_latent({}, {"batch_size": 3})
    api["6"]["inputs"]["batch_size"] = 2
    message = assert_clear_error(
        failed(client, api), SAMPLER, SAMPLER_NAME,
        "CogVideoX Image To Video made 2 videos (batch_size=2) but the latent holds 3", "same batch_size",
    )
    assert "image_latent" not in message and "cogvideox_" not in message, message


def test_one_image_for_a_batch_of_two_runs(client):
    """A batch-1 image conditioning serves every video of the latent's batch (as diffusers repeats it)."""
    api = _i2v_with_own_latent({"prefix": "rel2/sizes/one_image"}, {"batch_size": 2})
    videos = saved_videos(client, client.run(api, timeout=300))
    assert [info.frames for _, info, _ in videos] == [rm.FRAMES, rm.FRAMES]
