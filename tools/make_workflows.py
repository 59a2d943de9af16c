"""Builds the shipped workflows through the real ComfyUI frontend.

Each workflow is written here as an API-format graph. The script starts the real host
with the pack, loads every graph into the real frontend in headless Chromium (as a
person's drag-and-drop of an API file does), lays the nodes out in columns, adds
``properties.models``, and saves what the frontend serialises:

- ``workflows/<name>.json``      the UI format people drag in and share (ComfyUI lists these
                                 as the pack's templates);
- ``workflows/api/<name>.json``  its API twin, exactly ``app.graphToPrompt().output``.

The workflows need nothing but the pack: their inputs are built in the graph from core nodes
(the image-to-video first frame is a coloured square composited on the grey of the tiny
model's synthetic clips, the video-to-video source comes from a text-to-video branch), so
they run on a fresh install with an empty ``input/`` folder.

With ``--thumbnails`` it also runs each API twin in the host and saves a 3x3 grid of the
video's frames as ``workflows/<name>.jpg``, where the frontend's template browser looks for
it (``/api/workflow_templates/<pack>/<name>.jpg``).

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
sys.path.insert(0, str(ROOT))

from harness.host import ComfyHost, output_files  # noqa: E402

from cogvideox import synthetic  # noqa: E402

log = logging.getLogger("make_workflows")

T5 = "cogvideox_tiny_t5.safetensors"
T2V = "cogvideox_tiny_t2v.safetensors"
I2V = "cogvideox_tiny_i2v.safetensors"
VAE = "cogvideox_tiny_vae.safetensors"
FUN_INP = "cogvideox_tiny_fun_inp.safetensors"
FUN_CONTROL = "cogvideox_tiny_fun_control.safetensors"
LORA = "cogvideox_tiny_blue_lora.safetensors"
VC_T2V = "videocrafter_tiny_t2v.safetensors"
VC_I2V = "videocrafter_tiny_i2v.safetensors"
SIZE = dict(width=synthetic.TINY_SIZE, height=synthetic.TINY_SIZE)  # the tiny CogVideoX's trained canvas, 128x128
SIDE = 54  # its objects' side: 24-30 px at 64x64 (synthetic.OBJECT_SIZE), so 48-60 px at 128
VC_SIZE = dict(width=64, height=64)  # the tiny VideoCrafter's, objects 14-20 px (synthetic.SMALL_OBJECTS)
VC_SIDE = 16
SAMPLING = dict(seed=42, steps=25, cfg=6.0, scheduler="auto", dynamic_cfg=False)
KSAMPLING = dict(seed=42, steps=25, cfg=6.0, sampler_name="euler", scheduler="simple", denoise=1.0)
# The tiny models' text-to-video and image-to-video templates sample at a lower guidance than the
# reference's 6: on the tiny models CFG 6 overdrives the caption (T2V: blobs split, shapes round off,
# speckle; I2V: the object grows), measured with tools/tiny/evaluate.py over 144 clips each
# (tiny/MODEL_CARD.md, "Guidance"). Real CogVideoX weights are sampled at 6 in the reference scripts.
T2V_CFG = 2.5
I2V_CFG = 1.5

# The tiny model ships in the repo under tiny/<folder>/; this is where it can be fetched from.
MODEL_URL = "https://github.com/cogvideox-nodes/cogvideox-nodes/raw/main/tiny"
# Where each model file goes in ComfyUI's models/ folder (for properties.models and the README).
MODEL_FOLDERS = {T5: "text_encoders", T2V: "diffusion_models", I2V: "diffusion_models", VAE: "vae",
                 FUN_INP: "diffusion_models", FUN_CONTROL: "diffusion_models", LORA: "loras",
                 VC_T2V: "checkpoints", VC_I2V: "checkpoints"}


def _rgb(colour: tuple[float, float, float]) -> int:
    """A colour in [0, 1] RGB as core Empty Image's ``color`` integer (0xRRGGBB)."""
    r, g, b = (round(v * 255) for v in colour)
    return (r << 16) | (g << 8) | b


BACKGROUND = _rgb(synthetic.BACKGROUND)  # the grey of the tiny model's training clips


def _square_on_grey(
    colour: str,
    x: int,
    y: int,
    frames: int = 1,
    side: int = SIDE,
    ids: tuple[str, str, str] = ("11", "14", "12"),
    size: dict | None = None,
) -> dict:
    """Core nodes drawing a ``colour`` square with its top-left corner at (x, y) on the grey
    canvas (``size``, default ``SIZE``), repeated ``frames`` times: the node ``ids[2]`` (canvas,
    square, composite) outputs the IMAGE."""
    canvas, square, image = ids
    return {
        canvas: _n("EmptyImage", "Grey canvas", **(size or SIZE), batch_size=frames, color=BACKGROUND),
        square: _n("EmptyImage", f"{colour.capitalize()} square", width=side, height=side, batch_size=1,
                   color=_rgb(synthetic.PALETTE[colour])),
        image: _n("ImageCompositeMasked", destination=[canvas, 0], source=[square, 0], x=x, y=y, resize_source=False),
    }


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
            **{**SAMPLING, "cfg": T2V_CFG}, denoise=1.0,
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
        # the first frame: a blue square near the top (centre (44, 36)), as in the training clips
        **_square_on_grey("blue", x=17, y=9),
        "5": _n(
            "CogVideoXImageToVideo", positive=["2", 0], negative=["3", 0], vae=["7", 0], image=["12", 0],
            **SIZE, frames=9, batch_size=1, resize_mode="crop", noise_aug_strength=0.0, noise_aug_mode="fixed",
            image_latent_scaling="diffusers", seed=0,
        ),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["5", 0], negative=["5", 1], latent=["5", 2],
            **{**SAMPLING, "cfg": I2V_CFG}, denoise=1.0,
        ),
        **_decode_save(["8", 0], "image_to_video"),
    },
    "video_to_video": {
        **_text_nodes("a green square moving left"),
        "4": _n("CogVideoXModelLoader", model_name=T2V, weight_dtype="auto"),
        # the source clip: a yellow square moving right, from a text-to-video branch
        "11": _n("CogVideoXTextEncode", "Source prompt", clip=["1", 0], text="a yellow square moving right"),
        "12": _n("CogVideoXEmptyLatent", **SIZE, frames=9, batch_size=1),
        "13": _n(
            "CogVideoXSampler", "Source sampler", model=["4", 0], positive=["11", 0], negative=["3", 0],
            latent=["12", 0], **SAMPLING, denoise=1.0,
        ),
        "14": _n("CogVideoXVAEDecode", "Source decode", vae=["7", 0], samples=["13", 0], tiling="auto",
                 tile_size=256),
        "5": _n("CogVideoXVideoToVideo", vae=["7", 0], images=["14", 0], **SIZE, resize_mode="crop"),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["2", 0], negative=["3", 0], latent=["5", 0],
            **SAMPLING, denoise=0.7,
        ),
        **_decode_save(["8", 0], "video_to_video"),
    },
    # The same graphs on the loader's core MODEL output (slot 2) with core KSampler: euler + simple
    # at a step count dividing 1000 walks the reference's trailing timesteps.
    "text_to_video_ksampler": {
        **_text_nodes("a red square moving right"),
        "4": _n("CogVideoXModelLoader", model_name=T2V, weight_dtype="auto"),
        "5": _n("CogVideoXEmptyLatent", **SIZE, frames=9, batch_size=1),
        "8": _n("KSampler", model=["4", 2], positive=["2", 0], negative=["3", 0], latent_image=["5", 0], **KSAMPLING),
        **_decode_save(["8", 0], "text_to_video_ksampler"),
    },
    "image_to_video_ksampler": {
        **_text_nodes("a blue square moving down"),
        "4": _n("CogVideoXModelLoader", model_name=I2V, weight_dtype="auto"),
        # the first frame: a blue square near the top (centre (44, 36)), as in the training clips
        **_square_on_grey("blue", x=17, y=9),
        "5": _n(
            "CogVideoXImageToVideo", positive=["2", 0], negative=["3", 0], vae=["7", 0], image=["12", 0],
            **SIZE, frames=9, batch_size=1, resize_mode="crop", noise_aug_strength=0.0, noise_aug_mode="fixed",
            image_latent_scaling="diffusers", seed=0,
        ),
        "8": _n("KSampler", model=["4", 2], positive=["5", 0], negative=["5", 1], latent_image=["5", 2], **KSAMPLING),
        **_decode_save(["8", 0], "image_to_video_ksampler"),
    },
    # 3x the tiny model's trained length (33 frames = 9 latent frames) in core context windows of
    # its trained 3 latent frames on the frame axis (dim 2), overlapping by one.
    "long_video": {
        **_text_nodes("a red square moving right"),
        "4": _n("CogVideoXModelLoader", model_name=T2V, weight_dtype="auto"),
        "6": _n(
            "ContextWindowsManual", model=["4", 2], context_length=3, context_overlap=1,
            context_schedule="standard_static", context_stride=1, closed_loop=False, fuse_method="pyramid", dim=2,
        ),
        "5": _n("CogVideoXEmptyLatent", **SIZE, frames=33, batch_size=1),
        "8": _n("KSampler", model=["6", 0], positive=["2", 0], negative=["3", 0], latent_image=["5", 0], **KSAMPLING),
        **_decode_save(["8", 0], "long_video"),
    },
    "vae_roundtrip": {
        "7": _n("CogVideoXVAELoader", vae_name=VAE, weight_dtype="auto"),
        # the source clip: 9 frames of a yellow square on grey, made with core image nodes
        **_square_on_grey("yellow", x=37, y=37, frames=9),
        "5": _n("CogVideoXVAEEncode", vae=["7", 0], images=["12", 0], tiling="auto", tile_size=256),
        **_decode_save(["5", 0], "vae_roundtrip"),
    },
}

# CogVideoX-Fun (docs/cogvideox_fun.md): first/last frame and video inpainting with the tiny InP
# model, a control video (silhouettes made with core mask nodes) with the tiny Control model.
_FUN_SIZE = dict(**SIZE, frames=9, batch_size=1, resize_mode="crop")
# With both ends given the frames carry the content; CFG 6 amplifies the caption's motion past the end
# frame (the tiny InP model's end 1.8 px off in the median, both ends within 3 px on 79.9% of 144 clips; at
# CFG 1.5: 1.15 px, 97.2%: tiny/MODEL_CARD.md). Real Fun InP models are sampled at ~6 in the reference scripts.
FIRST_LAST_CFG = 1.5
WORKFLOWS.update({
    "first_last_frame": {
        **_text_nodes("a blue square moving down"),
        "4": _n("CogVideoXModelLoader", model_name=FUN_INP, weight_dtype="auto"),
        # first and last frame: a blue square near the top, then 34 px lower
        **_square_on_grey("blue", x=17, y=9, ids=("11", "16", "17")),
        **_square_on_grey("blue", x=17, y=43, ids=("18", "19", "12")),
        "5": _n(
            "CogVideoXFunInpaintConditioning", positive=["2", 0], negative=["3", 0], vae=["7", 0], **_FUN_SIZE,
            noise_aug_strength=0.0563, seed=0, start_image=["17", 0], end_image=["12", 0],
        ),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["5", 0], negative=["5", 1], latent=["5", 2],
            **{**SAMPLING, "cfg": FIRST_LAST_CFG}, denoise=1.0,
        ),
        **_decode_save(["8", 0], "first_last_frame"),
    },
    "inpaint_video": {
        **_text_nodes("a yellow square moving right"),
        "4": _n("CogVideoXModelLoader", model_name=FUN_INP, weight_dtype="auto"),
        # the source clip: 9 frames of a yellow square on grey, made with core image nodes
        **_square_on_grey("yellow", x=6, y=37, frames=9, ids=("11", "16", "12")),
        "13": _n("SolidMask", "Keep", value=0.0, **SIZE),
        "14": _n("SolidMask", "Generate", value=1.0, width=SIZE["width"] // 2, height=SIZE["height"]),
        "15": _n(
            "MaskComposite", "Right half to generate", destination=["13", 0], source=["14", 0],
            x=SIZE["width"] // 2, y=0, operation="add",
        ),
        "5": _n(
            "CogVideoXFunInpaintConditioning", positive=["2", 0], negative=["3", 0], vae=["7", 0], **_FUN_SIZE,
            noise_aug_strength=0.0563, seed=0, video=["12", 0], mask=["15", 0],
        ),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["5", 0], negative=["5", 1], latent=["5", 2],
            **SAMPLING, denoise=1.0,
        ),
        **_decode_save(["8", 0], "inpaint_video"),
    },
    "control_video": {
        **_text_nodes("a yellow square moving right"),
        "4": _n("CogVideoXModelLoader", model_name=FUN_CONTROL, weight_dtype="auto"),
        # the source clip: 9 frames of a yellow square on grey, made with core image nodes
        **_square_on_grey("yellow", x=6, y=37, frames=9, ids=("11", "16", "12")),
        "13": _n("ImageToMask", image=["12", 0], channel="red"),
        "14": _n("ThresholdMask", "Silhouette", mask=["13", 0], value=0.5),
        "15": _n("MaskToImage", mask=["14", 0]),
        "5": _n(
            "CogVideoXFunControlConditioning", positive=["2", 0], negative=["3", 0], vae=["7", 0], **_FUN_SIZE,
            control_video=["15", 0],
        ),
        "8": _n(
            "CogVideoXSampler", model=["4", 0], positive=["5", 0], negative=["5", 1], latent=["5", 2],
            **SAMPLING, denoise=1.0,
        ),
        **_decode_save(["8", 0], "control_video"),
    },
})

# VideoCrafter (docs/videocrafter.md) on its tiny model: core types throughout (MODEL, CLIP, VAE,
# CLIP_VISION; core CLIP Text Encode and VAE Decode), the reference's DDIM (eta 1) in VideoCrafter
# Sampler; 8 frames at 64x64, fps 8 (the tiny model's fastest trained motion).
VC_SAMPLING = dict(seed=42, steps=25, cfg=7.0, eta=1.0)


def _videocrafter(ckpt: str, prompt: str, prefix: str, image: dict | None = None) -> dict:
    graph = {
        "4": _n("VideoCrafterCheckpointLoader", ckpt_name=ckpt),
        "2": _n("CLIPTextEncode", "Positive prompt", clip=["4", 1], text=prompt),
        "3": _n("CLIPTextEncode", "Negative prompt", clip=["4", 1], text=""),
        "5": _n("VideoCrafterEmptyLatent", **VC_SIZE, frames=8),
    }
    positive, negative = ["2", 0], ["3", 0]
    if image is not None:
        graph.update(image)
        graph["13"] = _n(
            "VideoCrafterImageConditioning", positive=positive, negative=negative, model=["4", 0],
            clip_vision=["4", 3], image=["12", 0],
        )
        positive, negative = ["13", 0], ["13", 1]
    graph["6"] = _n("VideoCrafterFPS", conditioning=positive, fps=8)
    graph["8"] = _n("VideoCrafterSampler", model=["4", 0], positive=["6", 0], negative=negative, latent=["5", 0],
                    **VC_SAMPLING)
    graph["9"] = _n("VAEDecode", samples=["8", 0], vae=["4", 2])
    graph["10"] = _n("CogVideoXSaveVideo", images=["9", 0], fps=8.0, filename_prefix=f"VideoCrafter/{prefix}",
                     format="mp4 (h264)", crf=19)
    return graph


WORKFLOWS.update({
    "videocrafter_text_to_video": _videocrafter(VC_T2V, "a red square moving right", "text_to_video"),
    # the first frame: a blue square near the top (centre (22, 18)), as in the training clips
    "videocrafter_image_to_video": _videocrafter(
        VC_I2V, "a blue square moving down", "image_to_video",
        image=_square_on_grey("blue", x=14, y=10, side=VC_SIDE, size=VC_SIZE),
    ),
})

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
    # LoadVideo adds its preview widget a moment after loading (later on a busy machine): wait for it,
    # so the API twin holds it every time, as the page's own Run will
    page.wait_for_function(
        "() => app.graph._nodes.filter((n) => n.type === 'LoadVideo')"
        ".every((n) => (n.widgets || []).some((w) => w.name === 'video-preview'))",
        timeout=30_000,
    )
    page.evaluate(LAYOUT_JS, [MODEL_FOLDERS, MODEL_URL])
    # JSON round trip in the page: undefined fields are dropped as the frontend's own save does.
    ui = page.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    return ui, prompt


THUMBNAIL = 384  # px, the side of every template thumbnail


def _thumbnail(host: ComfyHost, api: dict, dest: Path) -> None:
    """Run ``api`` and save its video's first 9 frames as a 3x3 grid JPEG, ``THUMBNAIL`` px square
    (as the template browser's cards are): 128x128 frames as they are, 64x64 ones scaled up 2x."""
    from einops import rearrange
    from PIL import Image

    from cogvideox.video_io import read_video

    client = host.client()
    entry = client.run(api, timeout=900)
    video = next(f for f in output_files(entry) if f["filename"].endswith(".mp4"))
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        tmp.write(client.view(video["filename"], video["subfolder"], video["type"]))
        tmp.flush()
        frames, _ = read_video(tmp.name)  # [F, H, W, 3] in 0..1
    frames = frames[:9] if len(frames) >= 9 else frames[[round(i * (len(frames) - 1) / 8) for i in range(9)]]
    grid = rearrange(frames, "(r c) h w ch -> (r h) (c w) ch", r=3)  # [3H, 3W, 3]
    image = Image.fromarray((grid * 255).round().byte().numpy())
    if image.size != (THUMBNAIL, THUMBNAIL):
        image = image.resize((THUMBNAIL, THUMBNAIL), Image.NEAREST if image.width < THUMBNAIL else Image.LANCZOS)
    image.save(dest, quality=90)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thumbnails", action="store_true", help="also run each workflow for a frame strip")
    parser.add_argument("--only", nargs="+", choices=list(WORKFLOWS), help="build only these workflows")
    args = parser.parse_args(argv)
    names = args.only or list(WORKFLOWS)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, api_out = ROOT / "workflows", ROOT / "workflows" / "api"
    api_out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        host = ComfyHost(base_dir=Path(base), pack_dir=ROOT)  # a fresh base directory: input/ stays empty
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
                for name in names:
                    ui, prompt = _build(page, name, WORKFLOWS[name])
                    (out / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
                    (api_out / f"{name}.json").write_text(json.dumps(prompt, indent=2) + "\n")
                    log.info("wrote workflows/%s.json and workflows/api/%s.json", name, name)
                browser.close()
            if args.thumbnails:
                for name in names:
                    prompt = json.loads((api_out / f"{name}.json").read_text())
                    _thumbnail(host, prompt, out / f"{name}.jpg")
                    log.info("wrote workflows/%s.jpg", name)
        finally:
            host.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
