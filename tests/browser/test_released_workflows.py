"""Workflows saved with release 0.1 (``tests/fixtures/workflows_v0_1``) keep loading and running.

Later releases add optional inputs at the end of nodes. A saved UI workflow has fewer widget
values than the node now has widgets: the frontend must load it without complaint and fill the
new widgets with their defaults, and an old API prompt (without the new inputs) must still run.
Release 0.1's image- and video-to-video workflows load example files from ``input/``; like a
user who has them, the tests upload them first (``workflows_v0_1/inputs``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from harness import browser as ui
from harness.host import ExecutionFailed

pytestmark = pytest.mark.browser

RELEASED = Path(__file__).resolve().parents[1] / "fixtures" / "workflows_v0_1"
CASES = sorted(RELEASED.glob("*.json"))


@pytest.fixture(scope="module")
def released_inputs(comfy_client) -> list[str]:
    """The 0.1 example files in the host's input/, as a user of 0.1 had them."""
    return [comfy_client.upload_image(p)["name"] for p in sorted((RELEASED / "inputs").iterdir())]


def with_new_defaults(api: dict, object_info: dict) -> dict:
    """``api`` plus the default of every optional widget input it lacks (what the frontend fills in)."""
    out = copy.deepcopy(api)
    for node in out.values():
        optional = object_info[node["class_type"]]["input"].get("optional", {})
        for name, spec in optional.items():
            if name not in node["inputs"] and len(spec) > 1 and "default" in spec[1]:
                node["inputs"][name] = spec[1]["default"]
    return out


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_a_released_workflow_loads_with_defaults_for_the_new_inputs(
    comfy_page, comfy_client, released_inputs, path: Path
):
    workflow = json.loads(path.read_text())
    state = ui.drop_workflow(comfy_page, workflow, path.name)
    assert ui.load_problems(state) == []
    old_api = json.loads((RELEASED / "api" / path.name).read_text())
    expected = with_new_defaults(old_api, comfy_client.object_info())
    assert ui.graph_to_prompt(comfy_page) == expected


def test_a_released_api_prompt_without_the_new_inputs_still_runs(comfy_client):
    old_api = json.loads((RELEASED / "api" / "text_to_video.json").read_text())
    sampler = next(n for n in old_api.values() if n["class_type"] == "CogVideoXSampler")
    assert "cache_threshold" not in sampler["inputs"]  # the fixture really is the old format
    # Release 0.1's tiny model was 64x64; today's is 128x128 and says so, naming the node to change
    with pytest.raises(ExecutionFailed, match=r"128x128.*CogVideoX Empty Latent"):
        comfy_client.run(old_api, timeout=300)
    latent = next(n for n in old_api.values() if n["class_type"] == "CogVideoXEmptyLatent")
    latent["inputs"].update(width=128, height=128)  # the one change a 0.1 user makes; new inputs still absent
    entry = comfy_client.run(old_api, timeout=300)
    assert entry["status"]["status_str"] == "success"
