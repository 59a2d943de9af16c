"""The public contract of the node pack: node ids, input names and widget order.

``tests/fixtures/node_contract_v0_1.json`` records every node of release 0.1 as ComfyUI's
``/object_info`` describes it: the required inputs in order (name and type) and the optional
input names. Saved workflows store widget values by position and API prompts by name, so a
later version may only add optional inputs at the end (or new nodes); renaming, reordering,
retyping or removing anything recorded breaks users' workflows. Update the snapshot only for a
new release, never to make this test pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "node_contract_v0_1.json"


def describe(info: dict) -> dict:
    """The contract view of one ``/object_info`` entry."""
    inputs = info["input"]
    required = [[name, spec[0] if isinstance(spec[0], str) else "COMBO"] for name, spec in inputs["required"].items()]
    return {
        "display_name": info["display_name"],
        "category": info["category"],
        "required": required,
        "optional": list(inputs.get("optional", {})),
        "outputs": list(info["output"]),
    }


def contract_breaks(old: dict, new: dict) -> list[str]:
    """What ``new`` (node id -> description) breaks of ``old``; empty when compatible."""
    problems = []
    for node_id, was in old.items():
        now = new.get(node_id)
        if now is None:
            problems.append(f"{node_id}: removed (deprecate it instead)")
            continue
        if now["required"] != was["required"]:
            problems.append(f"{node_id}: required inputs changed from {was['required']} to {now['required']}")
        if now["optional"][: len(was["optional"])] != was["optional"]:
            problems.append(f"{node_id}: optional inputs changed from {was['optional']} to {now['optional']}")
        if now["outputs"][: len(was["outputs"])] != was["outputs"]:
            problems.append(f"{node_id}: outputs changed from {was['outputs']} to {now['outputs']}")
    return problems


def test_the_pack_keeps_the_released_node_contract(comfy_client):
    old = json.loads(SNAPSHOT.read_text())
    info = comfy_client.object_info()
    new = {k: describe(v) for k, v in info.items() if k.startswith("CogVideoX")}
    assert set(old) <= set(new)
    assert contract_breaks(old, new) == []


def test_the_contract_check_catches_a_rename_a_reorder_and_a_removal():
    old = json.loads(SNAPSHOT.read_text())
    sampler = old["CogVideoXSampler"]
    renamed = {**old, "CogVideoXSampler": {**sampler, "required": [["noise_seed", "INT"], *sampler["required"][1:]]}}
    reordered = {**old, "CogVideoXSampler": {**sampler, "required": list(reversed(sampler["required"]))}}
    removed = {k: v for k, v in old.items() if k != "CogVideoXSaveVideo"}
    appended = {**old, "CogVideoXSampler": {**sampler, "optional": [*sampler["optional"], "new_option"]}}
    assert contract_breaks(old, renamed) and contract_breaks(old, reordered) and contract_breaks(old, removed)
    assert contract_breaks(old, appended) == []


# ------------------------------------------------------------------ V3 schema and the full /object_info
# The nodes are V3 nodes (io.ComfyNode). OBJECT_INFO is the host's /object_info of every pack node
# (tools/dump_object_info.py writes it); OBJECT_INFO_V1 is the same dump taken before the move to
# V3, with the V1 classes. The move changed nothing but what V3 writes by itself (V3_ADDS).
OBJECT_INFO = SNAPSHOT.parent / "object_info_nodes.json"
OBJECT_INFO_V1 = SNAPSHOT.parent / "object_info_v0_2_v1_schema.json"
# Nodes allowed to stay V1, each with the reason (docs/ecosystem.md, "V3 schema"); none today.
V1_EXCEPTIONS: dict[str, str] = {}
# Combos listing model files: their options depend on the models folder, not on the node.
FILE_COMBOS = {"model_name", "vae_name", "t5_name", "lora_name", "ckpt_name"}
V3_ADDS = (
    "every node gains experimental/deprecated/api_node: false",
    "a combo's type is 'COMBO' with its list under options, plus multiselect: false (V1: the list is the type)",
    "hidden inputs are one-element lists (['UNIQUE_ID']; V1: 'UNIQUE_ID')",
    "a single-line STRING widget says multiline: false",
)


def _without_file_lists(info: dict) -> dict:
    """``info`` with the options of the model-file combos replaced by a marker."""
    info = json.loads(json.dumps(info))
    for entry in info.values():
        for group in ("required", "optional"):
            for name, spec in entry["input"].get(group, {}).items():
                if name in FILE_COMBOS:
                    assert spec[0] == "COMBO" and isinstance(spec[1]["options"], list), (name, spec)
                    spec[1]["options"] = "<files>"
    return info


def as_v3_writes_it(v1: dict) -> dict:
    """A V1 node's ``/object_info`` entry as ComfyUI 0.3.75 writes the same node declared in V3
    (the transformations of ``V3_ADDS``, and nothing else)."""
    entry = json.loads(json.dumps(v1))
    entry.update({"experimental": False, "deprecated": False, "api_node": False})
    for group in ("required", "optional"):
        for spec in entry["input"].get(group, {}).values():
            if isinstance(spec[0], list):
                spec[:] = ["COMBO", {**(spec[1] if len(spec) > 1 else {}), "multiselect": False, "options": spec[0]}]
            elif spec[0] == "STRING" and "multiline" not in spec[1]:
                spec[1]["multiline"] = False
    entry["input"]["hidden"] = {k: [v] for k, v in entry["input"].get("hidden", {}).items()} or None
    if entry["input"]["hidden"] is None:
        del entry["input"]["hidden"]
    return entry


def test_every_node_is_a_v3_node_or_a_documented_exception(pack_probe):
    nodes = pack_probe["nodes"]
    v1 = sorted(node_id for node_id, reg in nodes.items() if not reg["v3"])
    assert v1 == sorted(V1_EXCEPTIONS), f"V1 nodes not listed as exceptions (or listed but V3): {v1}"
    # comfy_entrypoint offers the same classes; 0.3.75 registers NODE_CLASS_MAPPINGS and then ignores it
    assert pack_probe["entrypoint_ids"] == list(nodes)


def test_object_info_matches_the_snapshot(comfy_client):
    info = {k: v for k, v in comfy_client.object_info().items() if k.startswith(("CogVideoX", "VideoCrafter"))}
    want = json.loads(OBJECT_INFO.read_text())
    assert sorted(info) == sorted(want)
    got, want = _without_file_lists(info), _without_file_lists(want)
    for node_id in want:  # one node at a time, for a readable difference
        assert got[node_id] == want[node_id], (
            f"{node_id}'s /object_info changed; if on purpose, rewrite the snapshot with "
            f"tools/dump_object_info.py {OBJECT_INFO.relative_to(OBJECT_INFO.parents[2])}"
        )


def test_the_move_to_v3_changed_only_what_v3_writes_by_itself():
    """Every 0.2 V1 node's full /object_info entry (tooltips, defaults, limits, order, outputs)
    equals the V3 node's, up to V3_ADDS. Nodes, optional inputs and outputs appended later are not
    in the V1 dump; an input, tooltip or default changed later fails here and in the contract test."""
    v1 = json.loads(OBJECT_INFO_V1.read_text())
    expected = _without_file_lists({node_id: as_v3_writes_it(entry) for node_id, entry in v1.items()})
    now = _without_file_lists(json.loads(OBJECT_INFO.read_text()))
    for node_id, want in expected.items():
        got = now[node_id]
        for group in ("required", "optional"):  # inputs appended since the V1 dump are allowed
            known = want["input"].get(group, {})
            if group in got["input"]:
                got["input"][group] = {k: v for k, v in got["input"][group].items() if k in known}
            if group in got["input_order"]:
                got["input_order"][group] = [k for k in got["input_order"][group] if k in known]
        for key in ("output", "output_is_list", "output_name", "output_tooltips"):  # outputs appended since
            if isinstance(got.get(key), list) and isinstance(want.get(key), list):
                got[key] = got[key][: len(want[key])]
        assert got == want, node_id


def test_v3_view_of_a_v1_entry_is_not_the_identity():
    """The transformation above does change a V1 entry (so the comparison is not vacuous)."""
    v1 = json.loads(OBJECT_INFO_V1.read_text())["CogVideoXSampler"]
    assert as_v3_writes_it(v1) != v1
    assert as_v3_writes_it(v1)["input"]["required"]["scheduler"][0] == "COMBO"
