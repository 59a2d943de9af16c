"""Drive the real ComfyUI frontend (comfyui-frontend-package 1.32.9) in Debian's headless
Chromium through Python playwright, the way a person uses it: drop a workflow file on the
canvas, look at what the page shows, press Run."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
VIEWPORT = {"width": 1600, "height": 1000}

_READY = "() => window.app && app.graph && Object.keys(LiteGraph.registered_node_types).length > 100"

_DROP = """async ([text, name]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, {type: 'application/json'}));
  const target = document.querySelector('canvas#graph-canvas') || document;
  const init = {dataTransfer: dt, bubbles: true, cancelable: true};
  target.dispatchEvent(new DragEvent('dragenter', init));
  target.dispatchEvent(new DragEvent('dragover', init));
  target.dispatchEvent(new DragEvent('drop', init));
}"""

_STATE = """() => ({
  nodes: app.graph.nodes.map(n => ({
    id: n.id, type: n.type, title: n.title,
    registered: Object.prototype.hasOwnProperty.call(LiteGraph.registered_node_types, n.type),
    has_errors: !!n.has_errors,
  })),
  dialogs: Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText),
})"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_version(path: str) -> str:
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    return proc.stdout.strip()


def open_frontend(page, url: str, timeout_ms: int = 120_000) -> None:
    page.goto(url)
    page.wait_for_function(_READY, timeout=timeout_ms)


def close_dialogs(page) -> None:
    for _ in range(5):
        if not page.evaluate("() => document.querySelectorAll('.p-dialog').length"):
            break
        page.keyboard.press("Escape")
        time.sleep(0.2)
    settle_leaving_masks(page)


def settle_leaving_masks(page, timeout: float = 3.0) -> None:
    """Wait for the overlay masks of closed dialogs to finish leaving; drop one whose leave animation
    never ends. Seen once in CI (2026-11-28): a PrimeVue BlockUI mask stuck in ``p-overlay-mask-leave``
    over the whole page intercepted every click for 30 s (the same test passed on the rerun)."""
    leaving = "() => document.querySelectorAll('.p-overlay-mask-leave').length"
    deadline = time.monotonic() + timeout
    while page.evaluate(leaving):
        if time.monotonic() > deadline:
            page.evaluate("() => document.querySelectorAll('.p-overlay-mask-leave').forEach(m => m.remove())")
            return
        time.sleep(0.1)


def drop_workflow(page, workflow: dict[str, Any], filename: str, timeout: float = 30.0) -> dict[str, Any]:
    """Drop ``workflow`` as a file on the canvas; return the page's view of the loaded graph."""
    close_dialogs(page)
    page.evaluate(_DROP, [json.dumps(workflow), filename])
    expected = len(workflow.get("nodes", []))
    deadline = time.monotonic() + timeout
    stem = Path(filename).stem
    while True:
        state = page.evaluate(_STATE)
        title = page.title()
        if len(state["nodes"]) == expected and stem in title:
            time.sleep(0.5)  # let dialogs (e.g. missing nodes) open
            return page.evaluate(_STATE)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{filename} did not load: {len(state['nodes'])} of {expected} nodes, "
                               f"title {title!r}")
        time.sleep(0.2)


def load_problems(state: dict[str, Any]) -> list[str]:
    """What a person would see wrong right after loading: missing node types, red nodes."""
    problems = []
    for node in state["nodes"]:
        if not node["registered"]:
            problems.append(f"node #{node['id']} has type {node['type']!r}, which no loaded node pack registers")
        elif node["has_errors"]:
            problems.append(f"node #{node['id']} ({node['type']}) is marked with errors")
    problems.extend(
        f"dialog: {text.strip()[:300]}" for text in state["dialogs"] if "missing" in text.lower()
    )
    return problems


def graph_to_prompt(page) -> dict[str, Any]:
    return page.evaluate("async () => (await app.graphToPrompt()).output")


def queue_from_page(page, timeout_ms: int = 60_000) -> tuple[int, dict[str, Any]]:
    """Queue the loaded graph as the Run button does; return the server's status and answer."""
    with page.expect_response(
        lambda r: r.url.endswith("/prompt") and r.request.method == "POST", timeout=timeout_ms
    ) as info:
        page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    response = info.value
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text()}
    return response.status, body


def nodes_with_errors(page) -> list[str]:
    """Nodes the canvas draws red: a missing type (``has_errors``) or the server's node_errors
    for the last queued prompt (``app.lastNodeErrors``, which the red outline is drawn from)."""
    return page.evaluate(
        "() => app.graph.nodes.filter(n => n.has_errors || app.lastNodeErrors?.[n.id]?.errors)"
        ".map(n => `#${n.id} ${n.type}`)"
    )


def screenshot_keep_dialogs(page, dest: Path) -> Path:
    """The page as it is now, dialogs and panels included."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(dest))
    return dest


def screenshot(page, dest: Path) -> Path:
    close_dialogs(page)
    page.mouse.move(VIEWPORT["width"] / 2, VIEWPORT["height"] / 2)
    page.keyboard.press(".")  # fit the whole graph into view, as the '.' shortcut does
    time.sleep(0.6)
    dest.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(dest))
    return dest
