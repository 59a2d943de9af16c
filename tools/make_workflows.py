"""Builds the shipped workflows through the real ComfyUI frontend.

Each workflow is written here as an API-format graph. The script starts the real host
with the pack, loads every graph into the real frontend in headless Chromium (as a
person's drag-and-drop of an API file does), lays the nodes out in columns, adds
``properties.models``, and saves what the frontend serialises:

- ``workflows/<name>.json``      the UI format people drag in and share;
- ``workflows/api/<name>.json``  its API twin, exactly ``app.graphToPrompt().output``.

With ``--thumbnails`` it also runs each API twin in the host and saves a frame strip of
the video to ``workflows/thumbnails/<name>.png``.

    .venv/bin/python tools/make_workflows.py [--thumbnails]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.host import ComfyHost, output_files  # noqa: E402

log = logging.getLogger("make_workflows")

T5 = "cogvideox_tiny_t5.safetensors"
T2V = "cogvideox_tiny_t2v.safetensors"
I2V = "cogvideox_tiny_i2v.safetensors"
VAE = "cogvideox_tiny_vae.safetensors"
LORA = "cogvideox_tiny_blue_lora.safetensors"
FIRST_FRAME = "cogvideox_example_first_frame.png"
SOURCE_VIDEO = "cogvideox_example_source.mp4"
SIZE = dict(width=64, height=64)
SAMPLING = dict(seed=42, steps=25, cfg=6.0, scheduler="auto", dynamic_cfg=False)

# The tiny model ships in the repo under tiny/<folder>/; this is where it can be fetched from.
MODEL_URL = "https://github.com/cogvideox-nodes/cogvideox-nodes/raw/main/tiny"
# Where each model file goes in ComfyUI's models/ folder (for properties.models and the README).
MODEL_FOLDERS = {T5: "text_encoders", T2V: "diffusion_models", I2V: "diffusion_models", VAE: "vae", LORA: "loras"}


def _n(class_type: str, title: str | None = None, **inputs) -> dict:
    node = {"class_type": class_type, "inputs": inputs}
    if title:
        node["_meta"] = {"title": title}
    return node


def _text_nodes(prompt: str) -> dict:
    return {
        "1": _n("CogVideoXT5Loader", t5_name=T5, weight_dtype="auto"),
        "2": _n("CogVideoXTextEncode", "Positive prompt", clip=["1", 0], text=prompt),
        "3": _n("CogVideoXTextEncode", "Negative prompt", clip=["1", 0], text=""),
        "7": _n("CogVideoXVAELoader", vae_name=VAE, weight_dtype="auto"),
    }


def _decode_save(samples: list, prefix: str) -> dict:
    return {
        "9": _n("CogVideoXVAEDecode", vae=["7", 0], samples=samples, tiling="auto", tile_size=256),
        "10": _n(
            "CogVideoXSaveVideo",
            images=["9", 0],
            fps=8.0,
            filename_prefix=f"CogVideoX/{prefix}",
            format="mp4 (h264)",
            crf=19,
        ),
    }


WORKFLOWS: dict[str, dict] = {
    "text_to_video": {
        **_text_nodes("a red square moving right"),
        "4": _n("CogVideoXModelLoader", model_name=T2V, weight_dtype="auto"),
        "5": _n("CogVideoXEmptyLatent", **SIZE, frames=9, batch_size=1),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["2", 0], negative=["3", 0], latent=["5", 0],
            **SAMPLING, denoise=1.0,
        ),
        **_decode_save(["8", 0], "text_to_video"),
    },
    "text_to_video_lora": {  # the shipped tiny LoRA draws every shape blue, whatever the caption asks
        **_text_nodes("a red square moving right"),
        "4": _n("CogVideoXModelLoader", model_name=T2V, weight_dtype="auto"),
        "6": _n("CogVideoXLoRA", model=["4", 0], lora_name=LORA, strength=1.0, alpha_mode="auto"),
        "5": _n("CogVideoXEmptyLatent", **SIZE, frames=9, batch_size=1),
        "8": _n(
            "CogVideoXSampler", model=["6", 0], positive=["2", 0], negative=["3", 0], latent=["5", 0],
            **SAMPLING, denoise=1.0,
        ),
        **_decode_save(["8", 0], "text_to_video_lora"),
    },
    "image_to_video": {
        **_text_nodes("a blue square moving down"),
        "4": _n("CogVideoXModelLoader", model_name=I2V, weight_dtype="auto"),
        "11": _n("LoadImage", image=FIRST_FRAME),
        "12": _n("ImageScale", image=["11", 0], upscale_method="bilinear", **SIZE, crop="center"),
        "5": _n(
            "CogVideoXImageToVideo", positive=["2", 0], negative=["3", 0], vae=["7", 0], image=["12", 0],
            **SIZE, frames=9, batch_size=1, resize_mode="crop", noise_aug_strength=0.0, noise_aug_mode="fixed",
            image_latent_scaling="diffusers", seed=0,
        ),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["5", 0], negative=["5", 1], latent=["5", 2],
            **SAMPLING, denoise=1.0,
        ),
        **_decode_save(["8", 0], "image_to_video"),
    },
    "video_to_video": {
        **_text_nodes("a green square moving left"),
        "4": _n("CogVideoXModelLoader", model_name=T2V, weight_dtype="auto"),
        "11": _n("LoadVideo", file=SOURCE_VIDEO),
        "12": _n("GetVideoComponents", video=["11", 0]),
        "5": _n("CogVideoXVideoToVideo", vae=["7", 0], images=["12", 0], **SIZE, resize_mode="crop"),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["2", 0], negative=["3", 0], latent=["5", 0],
            **SAMPLING, denoise=0.7,
        ),
        **_decode_save(["8", 0], "video_to_video"),
    },
    "vae_roundtrip": {
        "7": _n("CogVideoXVAELoader", vae_name=VAE, weight_dtype="auto"),
        "11": _n("LoadVideo", file=SOURCE_VIDEO),
        "12": _n("GetVideoComponents", video=["11", 0]),
        "5": _n("CogVideoXVAEEncode", vae=["7", 0], images=["12", 0], tiling="auto", tile_size=256),
        **_decode_save(["5", 0], "vae_roundtrip"),
    },
}

LAYOUT_JS = """
([models, MODEL_URL]) => {
  const graph = app.graph;
  const nodes = graph._nodes;
  const depth = new Map();
  const visit = (node) => {
    if (depth.has(node.id)) return depth.get(node.id);
    let d = 0;
    for (const input of node.inputs || []) {
      if (input.link == null) continue;
      const link = graph.links[input.link] ?? graph.links.get?.(input.link);
      if (link) d = Math.max(d, visit(graph.getNodeById(link.origin_id)) + 1);
    }
    depth.set(node.id, d);
    return d;
  };
  nodes.forEach(visit);
  const columns = new Map();
  for (const node of [...nodes].sort((a, b) => a.id - b.id)) {
    const d = depth.get(node.id);
    const y = columns.get(d) ?? 60;
    node.pos = [40 + d * 400, y];
    columns.set(d, y + node.size[1] + 60);
    for (const w of node.widgets || []) {
      if (w.name === "control_after_generate") w.value = "fixed";  // shipped results are reproducible
    }
    const widget = (node.widgets || []).find((w) => models[w.value]);
    if (widget) {
      const directory = models[widget.value];
      node.properties = node.properties || {};
      node.properties.models = [{ name: widget.value, url: `${MODEL_URL}/${directory}/${widget.value}`, directory }];
    }
  }
  graph.extra = { ...(graph.extra || {}), ds: { scale: 0.75, offset: [20, 40] } };  // the whole graph in view
  graph.setDirtyCanvas(true, true);
}
"""


def _build(page, name: str, api: dict) -> tuple[dict, dict]:
    page.evaluate("([api, name]) => app.loadApiJson(api, name)", [api, name])
    page.wait_for_timeout(500)
    page.evaluate(LAYOUT_JS, [MODEL_FOLDERS, MODEL_URL])
    # JSON round trip in the page: undefined fields are dropped as the frontend's own save does.
    ui = page.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    return ui, prompt


def _thumbnail(host: ComfyHost, api: dict, dest: Path) -> None:
    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from cogvideox.video_io import read_video

    client = host.client()
    entry = client.run(api, timeout=900)
    video = next(f for f in output_files(entry) if f["filename"].endswith(".mp4"))
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        tmp.write(client.view(video["filename"], video["subfolder"], video["type"]))
        tmp.flush()
        frames, _ = read_video(tmp.name)
    strip = torch.cat(list(frames[:: max(1, len(frames) // 5)][:5]), dim=1)  # [H, 5*W, 3]
    Image.fromarray((strip * 255).round().byte().numpy()).resize((strip.shape[1] * 2, strip.shape[0] * 2)).save(dest)


def make_example_inputs(folder: Path) -> None:
    """The example inputs the workflows load, drawn like the tiny model's training clips (64x64):
    a first frame (a blue square near the top) and a 9-frame source video (a yellow square moving
    right). 9 frames: the tiny models have learned positions for at most 9 frames at 64x64."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from cogvideox import synthetic
    from cogvideox.video_io import write_video

    folder.mkdir(parents=True, exist_ok=True)
    first = synthetic.render("blue", "square", torch.tensor([[22.0, 18.0]]), 17.0)  # [3, 1, H, W] in [-1, 1]
    pixels = ((first[:, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte()  # [H, W, 3]
    Image.fromarray(pixels.numpy()).save(folder / FIRST_FRAME)
    centres = torch.stack([torch.linspace(18.0, 44.0, 9), torch.full((9,), 32.0)], dim=1)  # [9, (x, y)]
    video = synthetic.render("yellow", "square", centres, 17.0)  # [3, 9, H, W]
    write_video(str(folder / SOURCE_VIDEO), ((video + 1) / 2).permute(1, 2, 3, 0).contiguous(), 8.0, crf=12)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thumbnails", action="store_true", help="also run each workflow for a frame strip")
    parser.add_argument("--only", nargs="+", choices=list(WORKFLOWS), help="build only these workflows")
    args = parser.parse_args(argv)
    workflows = {name: WORKFLOWS[name] for name in (args.only or WORKFLOWS)}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, api_out, thumbs = ROOT / "workflows", ROOT / "workflows" / "api", ROOT / "workflows" / "thumbnails"
    make_example_inputs(out / "inputs")
    api_out.mkdir(parents=True, exist_ok=True)
    thumbs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        host = ComfyHost(base_dir=Path(base), pack_dir=ROOT)
        host.prepare_base_dir()
        for example in (ROOT / "workflows" / "inputs").iterdir():
            shutil.copy(example, Path(base) / "input" / example.name)
        host.start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=shutil.which("chromium"),
                    args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                )
                page = browser.new_page(viewport={"width": 1800, "height": 1000})
                page.goto(host.url)
                page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
                for name, api in workflows.items():
                    ui, prompt = _build(page, name, api)
                    (out / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
                    (api_out / f"{name}.json").write_text(json.dumps(prompt, indent=2) + "\n")
                    log.info("wrote workflows/%s.json and workflows/api/%s.json", name, name)
                browser.close()
            if args.thumbnails:
                for name in workflows:
                    prompt = json.loads((api_out / f"{name}.json").read_text())
                    _thumbnail(host, prompt, thumbs / f"{name}.png")
                    log.info("wrote workflows/thumbnails/%s.png", name)
        finally:
            host.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
