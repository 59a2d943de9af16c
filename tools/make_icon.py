"""Draws the pack's registry icon, ``web/icon.png`` (256x256): a film strip whose frames show
a square moving across, in the tiny model's palette (cogvideox/synthetic.py).

    .venv/bin/python tools/make_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cogvideox import synthetic  # noqa: E402

SIZE = 256


def _rgb(colour: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(round(v * 255) for v in colour)


def draw() -> Image.Image:
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle((8, 8, SIZE - 8, SIZE - 8), radius=36, fill=(24, 24, 28, 255))
    for x in range(28, SIZE - 28, 28):  # the strip's perforations
        d.rounded_rectangle((x, 22, x + 14, 34), radius=3, fill=(200, 200, 200, 255))
        d.rounded_rectangle((x, SIZE - 34, x + 14, SIZE - 22), radius=3, fill=(200, 200, 200, 255))
    grey = _rgb(synthetic.BACKGROUND)
    frames = [(24 + k * 54, 56) for k in range(4)]  # four 50x144 frames side by side
    for k, ((x, y), colour) in enumerate(zip(frames, synthetic.PALETTE.values(), strict=False)):
        d.rectangle((x, y, x + 48, y + 144), fill=grey)
        top = y + 18 + k * 30  # the square moves down frame by frame
        d.rectangle((x + 10, top, x + 38, top + 28), fill=_rgb(colour))
    return image


if __name__ == "__main__":
    dest = ROOT / "web" / "icon.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    draw().save(dest, optimize=True)
    print(dest)
