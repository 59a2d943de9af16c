"""The pack as a real ComfyUI 0.3.75 sees it: clean import, every node listed by
``/object_info`` with its inputs and outputs, and every shipped API workflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness.host import PACK_DIR_NAME, output_files
from harness.plugin import WORKFLOWS_DIR, api_twin, ui_workflow_paths

pytestmark = pytest.mark.host

PACK_MODULE = f"custom_nodes.{PACK_DIR_NAME}"
CATEGORY_ROOT = "CogVideoX"
API_WORKFLOWS = sorted((WORKFLOWS_DIR / "api").glob("*.json"))


def _pack_object_info(comfy_client) -> dict:
    return {k: v for k, v in comfy_client.object_info().items() if v.get("python_module") == PACK_MODULE}


def test_pack_imports_without_import_failed(comfy_host, pack_registrations):
    assert comfy_host.import_failures() == [], comfy_host.log_tail(60)
    assert pack_registrations, "the pack registers no node (NODE_CLASS_MAPPINGS is empty)"


def test_object_info_lists_exactly_the_registered_nodes(comfy_client, pack_registrations):
    listed = _pack_object_info(comfy_client)
    assert sorted(listed) == sorted(pack_registrations)


def test_node_ids_display_names_and_categories_follow_the_pack_conventions(comfy_client, pack_registrations):
    listed = _pack_object_info(comfy_client)
    for node_id, reg in pack_registrations.items():
        assert node_id.startswith(("CogVideoX", "VideoCrafter")), node_id  # the pack's families
        assert reg["display"], f"{node_id} has no NODE_DISPLAY_NAME_MAPPINGS entry"
        assert listed[node_id]["display_name"] == reg["display"]
        category = listed[node_id]["category"]
        assert category == CATEGORY_ROOT or category.startswith(CATEGORY_ROOT + "/"), (node_id, category)


def test_every_node_declares_inputs_and_consistent_outputs(comfy_client, pack_registrations):
    for node_id, info in _pack_object_info(comfy_client).items():
        inputs = info["input"]
        assert isinstance(inputs.get("required", {}), dict), node_id
        declared = {**inputs.get("required", {}), **inputs.get("optional", {})}
        assert declared or info["output_node"], f"{node_id} takes no input and is no output node"
        for name, spec in declared.items():
            assert isinstance(spec, list) and spec, (node_id, name, spec)
            assert isinstance(spec[0], (str, list)), (node_id, name, spec)
        outputs = info["output"]
        assert outputs or info["output_node"], f"{node_id} has no output and is no output node"
        assert len(info["output_name"]) == len(outputs) == len(info["output_is_list"]), node_id
        assert all(isinstance(t, str) and t for t in outputs), (node_id, outputs)


def test_every_ui_workflow_has_an_api_twin_and_vice_versa():
    ui = {p.stem for p in ui_workflow_paths()}
    api = {p.stem for p in API_WORKFLOWS}
    assert ui == api, f"UI without API twin: {sorted(ui - api)}; API without UI: {sorted(api - ui)}"
    for path in ui_workflow_paths():
        assert api_twin(path).is_file()


def test_shipped_api_workflows_use_only_registered_or_core_nodes(comfy_client):
    known = set(comfy_client.object_info())
    for path in API_WORKFLOWS:
        graph = json.loads(path.read_text())
        unknown = {n["class_type"] for n in graph.values()} - known
        assert not unknown, f"{path.name} uses node types the host does not know: {sorted(unknown)}"


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=[p.stem for p in API_WORKFLOWS])
def test_shipped_api_workflow_runs_and_writes_its_outputs(comfy_host, comfy_client, api_path: Path):
    graph = json.loads(api_path.read_text())
    entry = comfy_client.run(graph, timeout=900)
    assert entry["status"]["status_str"] == "success"
    files = output_files(entry)
    assert files, f"{api_path.stem} produced no output file: {entry['outputs']}"
    for record in files:
        data = comfy_client.view(record["filename"], record["subfolder"], record["type"])
        assert len(data) > 0, record
        if record["type"] == "output":
            on_disk = comfy_host.base_dir / "output" / record["subfolder"] / record["filename"]
            assert on_disk.is_file() and on_disk.stat().st_size == len(data), record
