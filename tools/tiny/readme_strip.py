"""The README's demo strip: the shipped ``text_to_video`` workflow's frames beside the ground truth.

Runs the workflow's API twin (the same graph ``make demo`` queues, through the nodes in a real
headless ComfyUI) and draws two rows of its frames, each scaled up 3x: on top a synthetic clip
for the same caption (``cogvideox.synthetic``, what the tiny model was trained to draw), below
what the workflow generated. It prints the evaluation tool's verdict on both
(``cogvideox.evaluation.judge_clip``) so the README can quote it.

    .venv/bin/python tools/tiny/readme_strip.py [--out docs/images/demo_vs_truth.png]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cogvideox import evaluation, synthetic  # noqa: E402

log = logging.getLogger("readme_strip")
GAP = 4  # px of background between the two rows (before scaling)


def caption_of(api: dict) -> str:
    """The positive prompt of the workflow's API twin."""
    for node in api.values():
        if node["class_type"] == "CogVideoXTextEncode" and node["_meta"]["title"] == "Positive prompt":
            return node["inputs"]["text"]
    raise ValueError("the workflow has no CogVideoXTextEncode titled 'Positive prompt'")


def parse_caption(caption: str) -> tuple[str, str, str]:
    """``"a red square moving right"`` -> ("red", "square", "right")."""
    words = caption.split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise ValueError(f"not a synthetic caption: {caption!r}")
    return words[1], words[2], words[4]


def generated_frames(api: dict) -> torch.Tensor:
    """Run ``api`` in a fresh headless ComfyUI; the MP4's frames ``[3, F, H, W]`` in [-1, 1]."""
    from harness.host import ComfyHost
    from harness.known_answers import run_video

    with tempfile.TemporaryDirectory(prefix="cogvideox-strip-") as base:
        host = ComfyHost(base_dir=Path(base), pack_dir=ROOT)
        host.start()
        try:
            return run_video(host.client(), api)
        finally:
            host.stop()


def strip(rows: list[torch.Tensor], scale: int = 3) -> torch.Tensor:
    """Rows of clips ``[3, F, H, W]`` in [-1, 1] -> one uint8 image ``[R*H + gaps, F*W, 3]``, scaled."""
    bg = (torch.tensor(synthetic.BACKGROUND) * 255).round().to(torch.uint8)
    parts = []
    for i, clip in enumerate(rows):
        if i:
            parts.append(bg.view(1, 1, 3).expand(GAP, clip.shape[1] * clip.shape[3], 3))
        frames = ((clip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [3, F, H, W]
        parts.append(frames.permute(2, 1, 3, 0).reshape(clip.shape[2], -1, 3))  # [H, F*W, 3]
    image = torch.cat(parts)  # [R*H + gaps, F*W, 3]
    return image.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "demo_vs_truth.png")
    parser.add_argument("--truth-seed", type=int, default=0, help="seed of the ground-truth clip's position")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    api = json.loads((ROOT / "workflows" / "api" / "text_to_video.json").read_text())
    caption = caption_of(api)
    colour, shape, direction = parse_caption(caption)
    truth = synthetic.make_clip(
        torch.Generator().manual_seed(args.truth_seed), colour=colour, shape=shape, direction=direction,
        size=synthetic.TINY_SIZE,
    ).video
    made = generated_frames(api)
    for name, clip in (("ground truth", truth), ("workflow", made)):
        verdict = evaluation.judge_clip(clip, colour, shape, direction)
        sys.stdout.write(f"{name} ({caption!r}): {verdict.summary()}; all right: {verdict.all_ok}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip([truth, made]).numpy()).save(args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
