"""A video saved by CogVideoX Save Video carries its workflow: dropping the MP4 on the canvas
of the real frontend restores the graph, as core ComfyUI videos do."""

from __future__ import annotations

import base64
import json
import time

import pytest
from harness import browser as ui
from harness.host import output_files
from harness.plugin import REPO_ROOT

pytestmark = pytest.mark.browser

_DROP_BYTES = """async ([b64, name, mime]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, {type: mime}));
  const target = document.querySelector('canvas#graph-canvas') || document;
  const init = {dataTransfer: dt, bubbles: true, cancelable: true};
  target.dispatchEvent(new DragEvent('dragenter', init));
  target.dispatchEvent(new DragEvent('dragover', init));
  target.dispatchEvent(new DragEvent('drop', init));
}"""

_GRAPH = "() => app.graph.nodes.map(n => [n.id, n.type, JSON.stringify(n.widgets_values ?? [])]).sort()"


def test_dropping_the_saved_mp4_restores_the_workflow(comfy_page, comfy_client):
    workflow = json.loads((REPO_ROOT / "workflows" / "text_to_video.json").read_text())
    for node in workflow["nodes"]:  # a short run: the graph, not the video, is under test
        if node["type"] == "CogVideoXSampler":
            node["widgets_values"][2] = 3  # steps (seed, control_after_generate, steps, ...)
    ui.drop_workflow(comfy_page, workflow, "mp4_restore_source.json")
    original = comfy_page.evaluate(_GRAPH)
    status, answer = ui.queue_from_page(comfy_page)
    assert status == 200, answer
    entry = comfy_client.wait(answer["prompt_id"], timeout=600)
    video = next(r for r in output_files(entry) if r["filename"].endswith(".mp4"))
    data = comfy_client.view(video["filename"], video["subfolder"], video["type"])

    comfy_page.evaluate("() => app.graph.clear()")
    assert comfy_page.evaluate("() => app.graph.nodes.length") == 0
    ui.close_dialogs(comfy_page)
    comfy_page.evaluate(_DROP_BYTES, [base64.b64encode(data).decode(), video["filename"], "video/mp4"])
    deadline = time.monotonic() + 30
    while comfy_page.evaluate("() => app.graph.nodes.length") < len(original) and time.monotonic() < deadline:
        time.sleep(0.2)
    restored = comfy_page.evaluate(_GRAPH)
    assert restored == original, "dropping the MP4 did not restore the graph it was made with"
