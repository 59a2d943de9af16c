"""Every shipped UI workflow, loaded into the real frontend as a person's drag-and-drop does:
nothing missing, nothing red, the frontend's API graph equals the shipped twin, and Run works."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from harness import browser as ui
from harness.host import output_files
from harness.plugin import REPO_ROOT, api_twin, ui_workflow_paths

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
SELFTEST = REPO_ROOT / "tests" / "harness" / "fixtures" / "selftest_core.json"
CASES = [*ui_workflow_paths(), SELFTEST]
IDS = [p.stem if p != SELFTEST else "harness-selftest_core" for p in CASES]


def assert_loads_cleanly(page, workflow: dict, filename: str) -> dict:
    state = ui.drop_workflow(page, workflow, filename)
    problems = ui.load_problems(state)
    assert not problems, f"{filename} does not load cleanly:\n" + "\n".join(problems)
    return state


@pytest.mark.parametrize("ui_path", CASES, ids=IDS)
def test_workflow_loads_matches_its_api_twin_and_runs(comfy_page, comfy_client, ui_path: Path):
    workflow = json.loads(ui_path.read_text())
    assert_loads_cleanly(comfy_page, workflow, ui_path.name)

    twin = json.loads(api_twin(ui_path).read_text())
    assert ui.graph_to_prompt(comfy_page) == twin, f"the frontend's graph differs from {api_twin(ui_path)}"

    status, answer = ui.queue_from_page(comfy_page)
    assert status == 200 and answer.get("node_errors") == {}, answer
    entry = comfy_client.wait(answer["prompt_id"], timeout=900)
    assert entry["status"]["status_str"] == "success"
    records = output_files(entry)
    assert records, f"{ui_path.stem} run from the page produced no output file"
    for record in records:
        assert comfy_client.view(record["filename"], record["subfolder"], record["type"])
    assert ui.nodes_with_errors(comfy_page) == []

    shot = ui.screenshot(comfy_page, SCREENSHOTS / f"{IDS[CASES.index(ui_path)]}.png")
    assert shot.stat().st_size > 10_000, "the screenshot is suspiciously small"


def test_a_workflow_with_an_unregistered_node_type_fails_the_load_check(comfy_page):
    workflow = copy.deepcopy(json.loads(SELFTEST.read_text()))
    workflow["nodes"][1]["type"] = "CogVideoXNoSuchNode"
    with pytest.raises(AssertionError) as failure:
        assert_loads_cleanly(comfy_page, workflow, "broken_selftest.json")
    message = str(failure.value)
    assert "'CogVideoXNoSuchNode', which no loaded node pack registers" in message, message
    assert "dialog: This workflow has missing nodes" in message, message
    status, answer = ui.queue_from_page(comfy_page)
    assert status == 400, answer
    assert ui.nodes_with_errors(comfy_page) == ["#2 CogVideoXNoSuchNode"]
    ui.screenshot(comfy_page, SCREENSHOTS / "negative-missing_node.png")


def test_a_node_rejected_by_the_server_is_marked_red_in_the_page(comfy_page):
    workflow = copy.deepcopy(json.loads(SELFTEST.read_text()))
    workflow["nodes"][0]["widgets_values"][0] = 0  # EmptyImage width below its minimum of 1
    assert_loads_cleanly(comfy_page, workflow, "bad_width_selftest.json")
    status, answer = ui.queue_from_page(comfy_page)
    assert status == 400 and "1" in answer["node_errors"], answer
    assert ui.nodes_with_errors(comfy_page) == ["#1 EmptyImage"]
    ui.screenshot(comfy_page, SCREENSHOTS / "negative-bad_width.png")
