"""Fit the shipped tiny VAE's latent-to-RGB preview projection and store it in the tiny models.

    .venv/bin/python tools/tiny/fit_preview.py                  # fit and report, write nothing
    .venv/bin/python tools/tiny/fit_preview.py --write          # also store it in the tiny transformers

Encodes synthetic clips (``cogvideox.synthetic``, a generator seed of its own) with the shipped
tiny VAE (posterior samples: what the tiny transformers were trained on), fits the least-squares
``[17, 3]`` projection of RAW latents to RGB in [-1, 1] (``cogvideox.preview.fit_rgb_projection``,
bias last) and reports how well it previews: R^2 of the fit, and per colour the share of clips
whose object cells come out nearest that colour. ``--write`` puts it in the variant metadata
(``latent_rgb``) of the tiny transformer files (every tensor unchanged), next to the
``scaling_factor`` of the same VAE; the loader gives it to the core MODEL's ``latent_format``
and to the pack sampler's previews. Rerun after the tiny VAE changes, or on new tiny files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cogvideox import synthetic  # noqa: E402
from cogvideox.loading import load_vae  # noqa: E402
from cogvideox.preview import fit_rgb_projection  # noqa: E402

log = logging.getLogger("fit_preview")
VAE = ROOT / "tiny" / "vae" / "cogvideox_tiny_vae.safetensors"
TRANSFORMERS = [ROOT / "tiny" / "diffusion_models" / f"cogvideox_tiny_{n}.safetensors" for n in ("t2v", "i2v")]


def encode_clips(vae, clips: int, seed: int, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Synthetic clips ``[N, 3, F, H, W]``, their latents ``[N, 16, T, h, w]`` and the clip labels."""
    gen = torch.Generator().manual_seed(seed)
    videos, latents, labels = [], [], []
    with torch.inference_mode():
        for start in range(0, clips, batch):
            video, items = synthetic.make_batch(gen, min(batch, clips - start), size=synthetic.TINY_SIZE)
            latents.append(vae.encode(video, sample=True, generator=gen))
            videos.append(video)
            labels += items
    return torch.cat(videos), torch.cat(latents), labels


def report(projection: torch.Tensor, videos: torch.Tensor, latents: torch.Tensor, labels: list) -> dict:
    """R^2 of the fit and, per colour, the share of clips whose object cells preview nearest it."""
    c = latents.shape[1]
    t, h, w = latents.shape[2:]
    frames = videos[:, :, ::4][:, :, :t]  # [N, 3, T, H, W]: the pixel frame each latent frame starts at
    pooled = torch.nn.functional.adaptive_avg_pool3d(frames, (t, h, w))  # [N, 3, T, h, w]
    rgb = torch.einsum("nctij,cr->nrtij", latents, projection[:c]) + projection[c].view(1, 3, 1, 1, 1)
    residual = ((rgb - pooled) ** 2).sum()
    total = ((pooled - pooled.mean(dim=(0, 2, 3, 4), keepdim=True)) ** 2).sum()
    names = list(synthetic.PALETTE)
    palette = torch.tensor([synthetic.PALETTE[n] for n in names]) * 2 - 1  # [K, 3] in [-1, 1]
    right: dict[str, list[int]] = {n: [0, 0] for n in names}
    for i, clip in enumerate(labels):
        mask = torch.stack([synthetic.object_mask(f) for f in pooled[i].unbind(1)], dim=0)  # [T, h, w]
        if not mask.any():
            continue
        cells = rgb[i].permute(1, 2, 3, 0)[mask]  # [M, 3]
        seen = names[int(torch.cdist(cells.mean(0, keepdim=True), palette).argmin())]
        right[clip.colour][0] += seen == clip.colour
        right[clip.colour][1] += 1
    return {
        "r2": float(1 - residual / total),
        "colour_right": {n: f"{a}/{b}" for n, (a, b) in right.items()},
    }


def write(projection: torch.Tensor, files: list[Path]) -> None:
    rows = [[round(float(v), 6) for v in row] for row in projection]
    for path in files:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        variant = json.loads(metadata["variant"])
        variant["latent_rgb"] = rows
        metadata["variant"] = json.dumps(variant)
        save_file(tensors, str(path), metadata=metadata)
        log.info("wrote latent_rgb into %s", path.relative_to(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=96, help="synthetic clips to fit on")
    parser.add_argument("--seed", type=int, default=2024, help="generator seed of the clips")
    parser.add_argument("--write", nargs="*", type=Path, default=None,
                        help="store in these transformer files (none given: the tiny t2v and i2v)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    vae = load_vae(VAE, dtype=torch.float32).eval()
    videos, latents, labels = encode_clips(vae, args.clips, args.seed)
    projection = fit_rgb_projection(latents, videos)  # [17, 3]
    held_out = encode_clips(vae, max(args.clips // 2, 8), args.seed + 1)
    log.info("fit on %d clips: %s", args.clips, report(projection, videos, latents, labels))
    log.info("held-out clips: %s", report(projection, *held_out))
    print(json.dumps([[round(float(v), 6) for v in row] for row in projection]))
    if args.write is not None:
        write(projection, [Path(p).resolve() for p in args.write] or TRANSFORMERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
