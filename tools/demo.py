"""`make demo`: the text-to-video workflow on the shipped tiny model, in a real ComfyUI.

Starts the real ComfyUI host headless with the pack installed, queues the API twin of
``workflows/text_to_video.json`` (optionally with another prompt), and prints the path of
the MP4 it wrote under ``output/``.

    .venv/bin/python tools/demo.py ["a green circle moving up"]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.host import ComfyHost, output_files  # noqa: E402

log = logging.getLogger("demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", help="the prompt (default: the workflow's)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    api = json.loads((ROOT / "workflows" / "api" / "text_to_video.json").read_text())
    for node in api.values():
        if node["class_type"] == "CogVideoXTextEncode" and node["_meta"]["title"] == "Positive prompt" and args.prompt:
            node["inputs"]["text"] = args.prompt
        if node["class_type"] == "CogVideoXSampler" and args.seed is not None:
            node["inputs"]["seed"] = args.seed
    output = ROOT / "output"
    output.mkdir(exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cogvideox-demo-") as base:
        host = ComfyHost(base_dir=Path(base), pack_dir=ROOT, extra_args=("--output-directory", str(output)))
        host.start()
        try:
            entry = host.client().run(api, timeout=900)
        except Exception:
            log.error("the demo failed; ComfyUI's log:\n%s", host.log_tail(60))
            raise
        finally:
            host.stop()
    video = next(f for f in output_files(entry) if f["filename"].endswith(".mp4"))
    path = output / video["subfolder"] / video["filename"]
    log.info("demo finished in %.1f s", time.monotonic() - started)
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
