"""CogVideoX-Fun nodes in the real host: InP (start/end frames, video + mask, no input) and Control
run end to end on random tiny Fun models with core image and mask nodes feeding them, and every
mixed-up graph gets a clear error naming the node and the fix while the server keeps serving."""

from __future__ import annotations

import pytest
from harness import reliability_models as rm
from harness.host import ExecutionFailed
from harness.reliability import assert_clear_error, assert_still_serves, execution_error, i2v_graph, t2v_graph

pytestmark = pytest.mark.host

INP, INP_NAME = "CogVideoXFunInpaintConditioning", "CogVideoX Fun Inpaint Conditioning"
CONTROL, CONTROL_NAME = "CogVideoXFunControlConditioning", "CogVideoX Fun Control Conditioning"
SAMPLER, SAMPLER_NAME = "CogVideoXSampler", "CogVideoX Sampler"


@pytest.fixture(scope="module")
def client(comfy_host, comfy_client):
    rm.ensure_models(comfy_host.base_dir / "models")
    yield comfy_client
    assert_still_serves(comfy_client, prefix="fun/after")


def _image(node_id: str, color: int, batch: int = 1, size: int = rm.SIZE) -> dict:
    return {
        node_id: {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": batch, "color": color},
        }
    }


def fun_graph(kind: str = "inpaint", model: str | None = None, resize_mode: str = "crop", **inputs) -> dict:
    """The T2V graph with a Fun conditioning node before the sampler; ``inputs`` wire its optional inputs."""
    api = t2v_graph(model=model or (rm.FUN_INP if kind == "inpaint" else rm.FUN_CONTROL), prefix=f"fun/{kind}")
    del api["5"]
    common = {
        "positive": ["2", 0],
        "negative": ["3", 0],
        "vae": ["7", 0],
        "width": rm.SIZE,
        "height": rm.SIZE,
        "frames": rm.FRAMES,
        "batch_size": 1,
        "resize_mode": resize_mode,
    }
    if kind == "inpaint":
        api["6"] = {"class_type": INP, "inputs": {**common, "noise_aug_strength": 0.0563, "seed": 0, **inputs}}
    else:
        api["6"] = {"class_type": CONTROL, "inputs": {**common, **inputs}}
    api["8"]["inputs"].update(positive=["6", 0], negative=["6", 1], latent=["6", 2])
    return api


def _runs(client, api) -> None:
    entry = client.run(api, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = [r for out in entry["outputs"].values() for r in out.get("images", [])]
    assert any(r["filename"].endswith(".mp4") for r in files), entry["outputs"]


def _fails(client, api) -> dict:
    with pytest.raises(ExecutionFailed) as failed:
        client.run(api, timeout=300)
    return execution_error(failed.value)


def test_inpaint_start_end_video_mask_and_text_only_run(client):
    api = fun_graph(start_image=["20", 0], end_image=["21", 0])
    api.update(_image("20", 0xCC2020) | _image("21", 0x2020CC))
    _runs(client, api)

    api = fun_graph(video=["22", 0], mask=["23", 0])  # a 9-frame video, one core SolidMask for all frames
    api.update(_image("22", 0x20CC20, batch=rm.FRAMES))
    api["23"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": rm.SIZE, "height": rm.SIZE}}
    _runs(client, api)

    _runs(client, fun_graph())  # no inputs: text-to-video for the InP model


def test_control_runs(client):
    api = fun_graph("control", control_video=["24", 0])
    api.update(_image("24", 0x808080, batch=rm.FRAMES))
    _runs(client, api)


def test_mixed_up_graphs_get_clear_errors(client):
    # an InP model given CogVideoX Image To Video conditioning
    error = _fails(client, i2v_graph(model=rm.FUN_INP))
    assert_clear_error(error, SAMPLER, SAMPLER_NAME, "Image To Video", INP_NAME, "start_image")
    # a plain model given Fun conditioning
    api = fun_graph(model=rm.T2V)
    assert_clear_error(_fails(client, api), SAMPLER, SAMPLER_NAME, INP_NAME, "CogVideoX-Fun inpaint")
    # a Fun model without Fun conditioning
    assert_clear_error(_fails(client, t2v_graph(model=rm.FUN_CONTROL)), SAMPLER, SAMPLER_NAME, CONTROL_NAME)
    # control conditioning for an InP model
    api = fun_graph("control", model=rm.FUN_INP, control_video=["24", 0])
    api.update(_image("24", 0x808080, batch=rm.FRAMES))
    assert_clear_error(_fails(client, api), SAMPLER, SAMPLER_NAME, CONTROL_NAME, INP_NAME)


def test_bad_inputs_name_the_node(client):
    api = fun_graph(video=["22", 0], mask=["25", 0])  # 9 video frames, 3 mask frames
    api.update(_image("22", 0x20CC20, batch=rm.FRAMES) | _image("26", 0xFFFFFF, batch=3))
    api["25"] = {"class_type": "ImageToMask", "inputs": {"image": ["26", 0], "channel": "red"}}
    assert_clear_error(_fails(client, api), INP, INP_NAME, "mask has 3 frames", "video has 9")

    api = fun_graph(resize_mode="none", start_image=["20", 0])
    api.update(_image("20", 0xCC2020, size=32))
    assert_clear_error(_fails(client, api), INP, INP_NAME, "start_image is 32x32", "resize_mode")

    api = fun_graph(mask=["23", 0])
    api["23"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": rm.SIZE, "height": rm.SIZE}}
    assert_clear_error(_fails(client, api), INP, INP_NAME, "video and mask go together")
