"""Writes the node help pages the ComfyUI frontend shows (``web/docs/<NodeId>.md``).

The 0.3.75 frontend (comfyui-frontend-package 1.32.9) opens a custom node's help from the
node's info button or the node library: it fetches ``/extensions/<pack>/docs/<NodeId>/<locale>.md``,
then ``/extensions/<pack>/docs/<NodeId>.md``, and resolves relative image paths against
``/extensions/<pack>/docs/``. ComfyUI serves ``/extensions/<pack>/`` from the pack's
``WEB_DIRECTORY`` (``web/``).

Each page says what the node does (its DESCRIPTION), lists its inputs and outputs with their
tooltips (from the running host's ``/object_info``, so the pages match the nodes), and shows
the shipped template that uses the node: its wiring (a screenshot of the real frontend) and
frames of its video (the template thumbnail, ``workflows/<name>.jpg``).

    .venv/bin/python tools/make_help_pages.py
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import browser as ui  # noqa: E402
from harness.host import ComfyHost  # noqa: E402
from harness.plugin import FRONTEND_SETTINGS  # noqa: E402

log = logging.getLogger("make_help_pages")

DOCS = ROOT / "web" / "docs"
IMAGES = DOCS / "images"
PACK_PREFIXES = ("CogVideoX", "VideoCrafter")
# The template that shows a node at work; CogVideoX nodes not listed use text_to_video,
# VideoCrafter nodes not listed videocrafter_text_to_video.
TEMPLATE_OF = {
    "VideoCrafterImageConditioning": "videocrafter_image_to_video",
    "CogVideoXImageToVideo": "image_to_video",
    "CogVideoXVideoToVideo": "video_to_video",
    "CogVideoXVAEEncode": "vae_roundtrip",
    "CogVideoXLoRA": "text_to_video_lora",
    "CogVideoXFunInpaintConditioning": "first_last_frame",
    "CogVideoXFunControlConditioning": "control_video",
}
TEMPLATE_TITLES = {
    "text_to_video": "text to video",
    "image_to_video": "image to video",
    "video_to_video": "video to video",
    "vae_roundtrip": "VAE round trip",
    "text_to_video_lora": "text to video with a LoRA",
    "first_last_frame": "first and last frame",
    "control_video": "control video",
    "videocrafter_text_to_video": "VideoCrafter text to video",
    "videocrafter_image_to_video": "VideoCrafter image to video",
}


def template_of(node_id: str) -> str | None:
    default = "videocrafter_text_to_video" if node_id.startswith("VideoCrafter") else "text_to_video"
    return TEMPLATE_OF.get(node_id, default)


def _cell(text: str) -> str:
    return " ".join(str(text).split())


def _type(spec) -> str:
    kind = spec[0]
    if kind == "COMBO":  # a V3 combo: the choices are its options (V1: the list is the type)
        kind = spec[1].get("options", [])
    if isinstance(kind, list):
        shown = ", ".join(f"`{v}`" for v in kind[:6])
        return f"one of {shown}{', ...' if len(kind) > 6 else ''}"
    return f"`{kind}`"


def render_page(node_id: str, info: dict) -> str:
    """The Markdown help page of one node from its ``/object_info`` entry."""
    template = template_of(node_id)
    title = TEMPLATE_TITLES[template] if template else ""
    lines = [f"# {info['display_name']}", "", _cell(info.get("description") or ""), ""]
    if template:
        lines += [f"![The {title} template, where this node is wired as usual](images/{template}_graph.jpg)", ""]
    # lists, not tables: the help panel is a narrow side bar
    lines += ["## Inputs", ""]
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            note = _cell(opts.get("tooltip", ""))
            if section == "optional":
                note = f"(optional) {note}"
            default = f" Default: `{opts['default']}`." if "default" in opts else ""
            lines.append(f"- **{name}** ({_type(spec)}): {note}{default}")
    outputs = list(zip(info["output_name"], info["output"], info.get("output_tooltips") or [], strict=False))
    if outputs:
        lines += ["", "## Outputs", ""]
        lines += [f"- **{name}** (`{kind}`): {_cell(tip)}" for name, kind, tip in outputs]
    if not template:
        return "\n".join([*lines, ""])
    lines += [
        "",
        "## Example",
        "",
        f"Frames of the video the *{template}* template makes with the tiny model that ships with the "
        "pack (Templates > Extensions > the pack's folder name):",
        "",
        f"![Frames of the {title} template's video](images/{template}.jpg)",
        "",
    ]
    return "\n".join(lines)


# Shows the whole graph at a zoom where LiteGraph draws titles and widgets (it draws bare boxes
# below ~0.6), its top-left corner at (LEFT, TOP) on the page, clear of the frontend's side bar,
# menu and tabs (drawn over the full-page canvas); returns the graph's box on the page in CSS px.
_SHOW_GRAPH = """([scale, left, top]) => {
  const ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect(), title = LiteGraph.NODE_TITLE_HEIGHT;
  const xs = [], ys = [];
  for (const n of app.graph.nodes) {
    xs.push(n.pos[0], n.pos[0] + n.size[0]);
    ys.push(n.pos[1] - title, n.pos[1] + n.size[1]);
  }
  const [x0, y0, x1, y1] = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
  ds.scale = scale;
  ds.offset[0] = (left - rect.left) / scale - x0;
  ds.offset[1] = (top - rect.top) / scale - y0;
  app.canvas.setDirty(true, true);
  app.canvas.draw(true, true);
  return {x: left - 20, y: top - 20, width: (x1 - x0) * scale + 40, height: (y1 - y0) * scale + 40};
}"""
SCALE = 0.8
LEFT, TOP = 140, 200
PICTURE_VIEWPORT = {"width": 3000, "height": 1600}  # room for the widest template at SCALE
MAX_WIDTH = 1200  # px of the saved picture; the help panel shows it narrower anyway


def _graph_picture(page, workflow: dict, name: str, dest: Path) -> None:
    from PIL import Image

    ui.drop_workflow(page, workflow, f"{name}.json")
    ui.close_dialogs(page)
    page.evaluate("() => { app.canvas.deselectAll?.(); }")
    page.mouse.move(5, PICTURE_VIEWPORT["height"] - 5)
    clip = page.evaluate(_SHOW_GRAPH, [SCALE, LEFT, TOP])
    page.wait_for_timeout(800)
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "graph.png"
        page.screenshot(path=str(shot), clip=clip)
        image = Image.open(shot).convert("RGB")
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.LANCZOS)
    image.save(dest, quality=80)


def main() -> int:
    from playwright.sync_api import sync_playwright

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        settings = Path(base) / "user" / "default" / "comfy.settings.json"  # a returning user: no dialogs
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps(FRONTEND_SETTINGS), encoding="utf-8")
        host = ComfyHost(base_dir=Path(base), pack_dir=ROOT)
        host.start()
        try:
            info = {k: v for k, v in host.client().object_info().items() if k.startswith(PACK_PREFIXES)}
            for node_id, entry in info.items():
                (DOCS / f"{node_id}.md").write_text(render_page(node_id, entry), encoding="utf-8")
                log.info("wrote web/docs/%s.md", node_id)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=ui.chromium_path(), args=list(ui.CHROMIUM_ARGS))
                page = browser.new_page(viewport=PICTURE_VIEWPORT)
                ui.open_frontend(page, host.url)
                for name in TEMPLATE_TITLES:
                    workflow = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
                    _graph_picture(page, workflow, name, IMAGES / f"{name}_graph.jpg")
                    shutil.copy(ROOT / "workflows" / f"{name}.jpg", IMAGES / f"{name}.jpg")
                    log.info("wrote web/docs/images/%s_graph.jpg and %s.jpg", name, name)
                browser.close()
        finally:
            host.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
