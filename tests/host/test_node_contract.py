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
