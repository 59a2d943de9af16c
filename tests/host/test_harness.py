"""The host harness itself, on a test-only workflow of core ComfyUI nodes: it runs graphs,
fetches their files, and fails loudly where ComfyUI rejects a graph."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from harness.host import ExecutionFailed, PromptRejected, output_files
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1] / "harness" / "fixtures"
SELFTEST_API = json.loads((FIXTURES / "api" / "selftest_core.json").read_text())

pytestmark = pytest.mark.host


def _selftest(width: int = 64, height: int = 48, color: int = 0xFF8000, prefix: str = "harness/selftest") -> dict:
    api = copy.deepcopy(SELFTEST_API)
    api["1"]["inputs"].update(width=width, height=height, color=color)
    api["2"]["inputs"]["filename_prefix"] = prefix
    return api


def test_host_answers_with_cpu_device_and_the_pinned_version(comfy_client):
    stats = comfy_client.system_stats()
    assert stats["system"]["comfyui_version"] == "0.3.75"
    assert [d["type"] for d in stats["devices"]] == ["cpu"]


def test_core_workflow_runs_and_its_image_comes_back_through_view(comfy_client):
    entry = comfy_client.run(_selftest(width=72, height=40, color=0x10A0F0), timeout=120)
    assert entry["status"]["status_str"] == "success"
    files = output_files(entry)
    assert len(files) == 1 and files[0]["type"] == "output" and files[0]["subfolder"] == "harness"
    data = comfy_client.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"])
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (72, 40)
    assert image.getpixel((5, 5)) == (0x10, 0xA0, 0xF0)


def test_unknown_node_type_raises_with_comfyui_error(comfy_client):
    api = _selftest()
    api["3"] = {"class_type": "CogVideoXNoSuchNode", "inputs": {"images": ["1", 0]}}
    with pytest.raises(PromptRejected) as rejected:
        comfy_client.queue(api)
    # ComfyUI 0.3.75 reports an unknown class as a prompt-level error with empty node_errors.
    assert rejected.value.status == 400
    assert rejected.value.error["type"] == "invalid_prompt", rejected.value.body
    assert "CogVideoXNoSuchNode" in rejected.value.error["message"]
    assert rejected.value.node_errors == {}
    assert "CogVideoXNoSuchNode" in str(rejected.value)


@pytest.mark.parametrize(
    ("node", "edit", "error_type", "input_name"),
    [
        ("1", {"width": "not a number"}, "invalid_input_type", "width"),
        ("1", {"width": 0}, "value_smaller_than_min", "width"),
        ("2", {"images": None}, "required_input_missing", "images"),
    ],
)
def test_bad_input_raises_with_node_errors_naming_node_and_input(comfy_client, node, edit, error_type,
                                                                 input_name):
    api = _selftest()
    for key, value in edit.items():
        if value is None:
            del api[node]["inputs"][key]
        else:
            api[node]["inputs"][key] = value
    with pytest.raises(PromptRejected) as rejected:
        comfy_client.queue(api)
    errors = rejected.value.node_errors
    assert list(errors) == [node], errors
    assert errors[node]["class_type"] == api[node]["class_type"]
    (error,) = errors[node]["errors"]
    assert error["type"] == error_type, error
    assert error["extra_info"]["input_name"] == input_name, error
    assert error_type in str(rejected.value)


def test_execution_error_raises_execution_failed(comfy_client, tmp_path):
    # The file exists, so validation passes; decoding it fails while the graph executes.
    broken = tmp_path / "harness_not_an_image.png"
    broken.write_bytes(b"this is not a PNG")
    name = comfy_client.upload_image(broken)["name"]
    api = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "harness/x"}},
    }
    with pytest.raises(ExecutionFailed) as failed:
        comfy_client.run(api, timeout=60)
    (detail,) = [m[1] for m in failed.value.messages if m[0] == "execution_error"]
    assert detail["node_type"] == "LoadImage", detail


def test_upload_image_then_load_it_in_a_graph(comfy_client, tmp_path):
    src = tmp_path / "harness_upload.png"
    Image.new("RGB", (20, 12), (200, 30, 60)).save(src)
    info = comfy_client.upload_image(src)
    assert info["name"] == "harness_upload.png"
    api = {
        "1": {"class_type": "LoadImage", "inputs": {"image": info["name"]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "harness/upload"}},
    }
    entry = comfy_client.run(api, timeout=120)
    (record,) = output_files(entry)
    image = Image.open(io.BytesIO(comfy_client.view(**record))).convert("RGB")
    assert image.size == (20, 12) and image.getpixel((3, 3)) == (200, 30, 60)


def test_interrupt_and_free_are_accepted_and_the_host_keeps_working(comfy_client):
    comfy_client.interrupt()
    comfy_client.free(unload_models=True, free_memory=True)
    entry = comfy_client.run(_selftest(color=0x00FF00, prefix="harness/after_free"), timeout=120)
    assert entry["status"]["status_str"] == "success"
