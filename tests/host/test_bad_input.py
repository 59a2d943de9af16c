"""Whatever a user can wire, through the real host: every mistake gets a clear answer that
names the node, the value and the fix (never a traceback from inside torch), and the server
keeps serving (the next prompt still runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import reliability_models as rm
from harness.host import ExecutionFailed, PromptRejected
from harness.reliability import assert_clear_error, assert_still_serves, execution_error, i2v_graph, t2v_graph

pytestmark = pytest.mark.host

SAMPLER, SAMPLER_NAME = "CogVideoXSampler", "CogVideoX Sampler"


@pytest.fixture(scope="module")
def models(comfy_host) -> Path:
    models_dir = comfy_host.base_dir / "models"
    rm.ensure_models(models_dir)
    return models_dir


@pytest.fixture
def client(comfy_client, models):
    """The host client; after the test, the next (good) prompt must still run."""
    yield comfy_client
    assert_still_serves(comfy_client, prefix="bad_input/after")


def _rejected(client, api) -> dict:
    try:
        prompt_id = client.queue(api)
    except PromptRejected as rejected:
        assert rejected.status == 400
        return rejected.node_errors
    client.interrupt()  # do not leave a runaway prompt behind for the next test
    client.wait(prompt_id, timeout=300, check=False)
    pytest.fail("ComfyUI accepted the prompt; it should have answered 400 with node_errors")


def _failed(client, api) -> dict:
    with pytest.raises(ExecutionFailed) as failed:
        client.run(api, timeout=300)
    return execution_error(failed.value)


# ------------------------------------------------------------------ sizes: VALIDATE_INPUTS -> 400
SIZE_CASES = [
    # (node inputs changed, the value as the message names it, the fix it offers)
    ({"frames": 10}, "frames=10", ["4k+1", "use 9 or 13"]),
    ({"frames": 0}, "frames=0", ["must be positive", "such as 49"]),
    ({"frames": 100_001}, "frames=100001", ["at most 1025"]),
    ({"width": 70}, "width=70", ["multiple of 16", "use 64 or 80"]),
    ({"height": 8}, "height=8", ["multiple of 16", "use 16"]),
    ({"width": 0}, "width=0", ["must be positive", "multiple of 16"]),
    ({"height": -64}, "height=-64", ["must be positive"]),
    ({"width": 100_000}, "width=100000", ["larger than 8192", "at most 8192"]),
    ({"batch_size": 0}, "batch_size=0", ["at least 1"]),
    ({"batch_size": 10_000}, "batch_size=10000", ["at most 64"]),
]


@pytest.mark.parametrize(("change", "value", "fixes"), SIZE_CASES, ids=lambda c: str(c))
def test_empty_latent_rejects_bad_sizes_with_the_value_and_the_fix(client, change, value, fixes):
    api = t2v_graph(prefix="bad_input/size")
    api["5"]["inputs"].update(change)
    errors = _rejected(client, api)
    assert set(errors) == {"5"}, errors
    assert errors["5"]["class_type"] == "CogVideoXEmptyLatent"
    details = " | ".join(e["details"] for e in errors["5"]["errors"])
    assert all(e["type"] == "custom_validation_failed" for e in errors["5"]["errors"]), errors
    assert "CogVideoX Empty Latent" in details and value in details, details
    for fix in fixes:
        assert fix in details, f"{fix!r} not in {details!r}"


def test_image_to_video_and_video_to_video_validate_sizes_too(client):
    api = i2v_graph(frames=11, width=100)
    errors = _rejected(client, api)
    details = " | ".join(e["details"] for e in errors["6"]["errors"])
    assert "CogVideoX Image To Video" in details and "frames=11" in details and "width=100" in details
    assert "use 9 or 13" in details and "use 96 or 112" in details
    api = t2v_graph()
    api["5"] = {
        "class_type": "CogVideoXVideoToVideo",
        "inputs": {"vae": ["7", 0], "images": ["12", 0], "width": 64, "height": 50, "resize_mode": "crop"},
    }
    api["12"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 9, "color": 0}}
    errors = _rejected(client, api)
    details = " | ".join(e["details"] for e in errors["5"]["errors"])
    assert "CogVideoX Video To Video" in details and "height=50" in details and "use 48 or 64" in details


# ------------------------------------------------------------------ wiring that does not fit the model
def test_image_to_video_model_given_a_text_only_latent(client):
    message = assert_clear_error(
        _failed(client, t2v_graph(model=rm.I2V)), SAMPLER, SAMPLER_NAME, "image-to-video", "rel-i2v",
        "CogVideoX Image To Video",
    )
    assert "no image" in message


def test_text_to_video_model_given_image_conditioning(client):
    assert_clear_error(
        _failed(client, i2v_graph(model=rm.T2V)), SAMPLER, SAMPLER_NAME, "text-to-video", "rel-t2v",
        "carries an image", "remove CogVideoX Image To Video",
    )


@pytest.mark.parametrize(
    ("node", "expected_shape"),
    [
        ({"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}, "(1, 4, 8, 8)"),
        (
            {"class_type": "EmptyMochiLatentVideo",
             "inputs": {"width": 64, "height": 64, "length": 7, "batch_size": 1}},
            "(1, 12, 2, 8, 8)",
        ),
    ],
    ids=["sd-image-latent-4ch", "mochi-latent-12ch"],
)
def test_latent_of_another_model_family(client, node, expected_shape):
    api = t2v_graph()
    api["5"] = node
    assert_clear_error(
        _failed(client, api), SAMPLER, SAMPLER_NAME, expected_shape, "16", "CogVideoX Empty Latent"
    )


@pytest.mark.parametrize(("frames", "width"), [(17, 64), (9, 128)], ids=["too-many-frames", "other-resolution"])
def test_learned_position_model_outside_its_trained_size(client, frames, width):
    """Like 5B-I2V: learned positions only fit the trained frame count and resolution."""
    api = i2v_graph(model=rm.I2V_LEARNED, frames=frames, width=width, height=64)
    message = assert_clear_error(
        _failed(client, api), SAMPLER, SAMPLER_NAME, "learned positional embeddings", f"{frames} frames",
        f"{width}x64", "9 frames", "64x64",
    )
    assert "CogVideoX Image To Video" in message, message


def test_learned_position_model_at_its_trained_size_runs(client):
    entry = client.run(i2v_graph(model=rm.I2V_LEARNED, prefix="bad_input/learned_ok"), timeout=300)
    assert entry["status"]["status_str"] == "success"


# ------------------------------------------------------------------ text encoders
@pytest.fixture(scope="module")
def clip_l(models) -> str:
    name = "rel_clip_l_random.safetensors"
    path = models / "text_encoders" / name
    if not path.exists():
        rm.clip_l_file(path)
    return name


def test_a_clip_that_is_not_t5(client, clip_l):
    api = t2v_graph()
    api["1"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": clip_l, "type": "stable_diffusion",
                                                       "device": "default"}}
    assert_clear_error(
        _failed(client, api), "CogVideoXTextEncode", "CogVideoX Text Encode", "not a T5 encoder", "l",
        "t5xxl_fp16.safetensors", "CogVideoX T5 Loader",
    )


def test_a_prompt_over_226_tokens_is_truncated_with_a_warning_and_runs(client, comfy_host):
    text = "a red square moving right over a green field under a blue sky " * 40 + "ZZTAILZZ"
    before = len(comfy_host.log_text())
    entry = client.run(t2v_graph(text=text, prefix="bad_input/long"), timeout=300)
    assert entry["status"]["status_str"] == "success"
    log = comfy_host.log_text()[before:]
    assert "CogVideoX Text Encode: the prompt is" in log and "T5 tokens too long" in log, log[-3000:]
    assert "ZZTAILZZ" in log, "the warning should show the end of the prompt that was cut"


# ------------------------------------------------------------------ files that are not what they claim
def test_sd_vae_in_the_vae_loader(client, models):
    rm.sd_vae_file(models / "vae" / "rel_sd15_vae.safetensors")
    api = t2v_graph()
    api["7"]["inputs"]["vae_name"] = "rel_sd15_vae.safetensors"
    assert_clear_error(
        _failed(client, api), "CogVideoXVAELoader", "CogVideoX VAE Loader", "rel_sd15_vae.safetensors",
        "2D image VAE", "CogVideoX 3D VAE",
    )


def test_image_unet_in_the_model_loader(client, models):
    rm.sd_unet_file(models / "diffusion_models" / "rel_sd15_unet.safetensors")
    api = t2v_graph(model="rel_sd15_unet.safetensors")
    assert_clear_error(
        _failed(client, api), "CogVideoXModelLoader", "CogVideoX Model Loader", "rel_sd15_unet.safetensors",
        "image diffusion U-Net", "not a CogVideoX transformer",
    )


@pytest.mark.parametrize(
    ("folder", "source", "node", "display", "edit"),
    [
        ("diffusion_models", rm.T2V, "CogVideoXModelLoader", "CogVideoX Model Loader",
         lambda api, name: api["4"]["inputs"].update(model_name=name)),
        ("vae", rm.VAE, "CogVideoXVAELoader", "CogVideoX VAE Loader",
         lambda api, name: api["7"]["inputs"].update(vae_name=name)),
        ("text_encoders", rm.T5, "CogVideoXT5Loader", "CogVideoX T5 Loader",
         lambda api, name: api["1"]["inputs"].update(t5_name=name)),
    ],
    ids=["model", "vae", "t5"],
)
def test_truncated_safetensors(client, models, folder, source, node, display, edit):
    name = f"rel_truncated_{folder}.safetensors"
    rm.truncated_copy(models / folder / source, models / folder / name)
    api = t2v_graph()
    edit(api, name)
    assert_clear_error(_failed(client, api), node, display, name, "truncated", "download it again")


@pytest.mark.parametrize(
    ("folder", "node", "display", "edit", "needles"),
    [
        ("diffusion_models", "CogVideoXModelLoader", "CogVideoX Model Loader",
         lambda api, name: api["4"]["inputs"].update(model_name=name), ["pickle", "only .safetensors"]),
        ("vae", "CogVideoXVAELoader", "CogVideoX VAE Loader",
         lambda api, name: api["7"]["inputs"].update(vae_name=name), ["pickle", "only .safetensors"]),
        ("text_encoders", "CogVideoXT5Loader", "CogVideoX T5 Loader",
         lambda api, name: api["1"]["inputs"].update(t5_name=name), ["pickle", "only .safetensors"]),
    ],
    ids=["model", "vae", "t5"],
)
def test_pickle_checkpoint_is_refused_without_being_unpickled(client, models, tmp_path, folder, node, display, edit,
                                                              needles):
    marker = tmp_path / "UNPICKLED"
    name = f"rel_evil_{folder}.pt"
    rm.pickle_file(models / folder / name, marker)
    api = t2v_graph()
    edit(api, name)
    assert_clear_error(_failed(client, api), node, display, name, *needles)
    assert not marker.exists(), "the pickle was unpickled: its code ran inside the server"


def test_pickle_marker_is_a_real_tripwire(tmp_path):
    """The booby-trapped pickle does create its marker when unpickled (so the test above can fail)."""
    import pickle

    marker = tmp_path / "UNPICKLED"
    rm.pickle_file(tmp_path / "evil.pt", marker)
    with (tmp_path / "evil.pt").open("rb") as fh:
        pickle.load(fh)  # noqa: S301 - the point of this test
    assert marker.exists()


def test_diffusers_folder_without_config_is_not_offered(client, models):
    weights = models / "diffusers" / "rel_noconfig" / "transformer"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "diffusion_pytorch_model.safetensors").write_bytes((models / "diffusion_models" / rm.T2V).read_bytes())
    complete = models / "diffusers" / "rel_withconfig" / "transformer"
    complete.mkdir(parents=True, exist_ok=True)
    (complete / "config.json").write_text("{}")
    (complete / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    choices = client.choices("CogVideoXModelLoader", "model_name")
    assert "diffusers/rel_withconfig/transformer" in choices, choices  # the listing does see the folder
    assert not [c for c in choices if "rel_noconfig" in c], choices
    errors = _rejected(client, t2v_graph(model="diffusers/rel_noconfig/transformer"))["4"]["errors"]
    # A V3 node's combo is checked by the node's validate_inputs (0.3.75 checks only V1 lists itself):
    # one error per input the check reads, each with the same message naming the node and the value.
    assert errors and all(e["type"] == "custom_validation_failed" for e in errors), errors
    message = errors[0]["details"]
    assert "CogVideoX Model Loader: model_name='diffusers/rel_noconfig/transformer' is not one of" in message, errors


# ------------------------------------------------------------------ numerics
def test_inf_during_sampling_is_reported_with_the_step_and_the_cause(client):
    """The model runs in float32 and one weight is inf: the weights are blamed, not float16
    (tests/host/test_actionable_messages.py has the NaN-image case)."""
    api = t2v_graph(model=rm.T2V_INF, steps=3)
    assert_clear_error(
        _failed(client, api), SAMPLER, SAMPLER_NAME, "NaN/inf", "step 1/3", "not a float16 overflow",
        "proj_out.weight", "CogVideoX Model Loader",
    )
