"""How much a tiny T2V model reads each word of the caption: a probe of the network, not a judge.

    .venv/bin/python tools/tiny/caption_sensitivity.py --tiny build/t128eval --size 128

For held-out clips (encoded with the folder's VAE), noised to timestep t with a fixed generator,
the model's x0 prediction with the clip's own caption is compared with its prediction when one
word (colour, shape or direction) is swapped for another: the relative L2 change
``|x0(swapped) - x0(own)| / |x0(own)|``, averaged over the clips. A word the model ignores gives
~0 at every t; the evaluation tool (``evaluate.py``) then finds that property at chance in the
generated clips. Single-step shape of the x0 prediction (decoded, judged by
``cogvideox.evaluation``) is reported too: where it is lost tells at which noise levels the model
fails to keep an object's outline it can still see.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as tiny_eval  # noqa: E402  (tools/tiny/evaluate.py: model folders, captions)
import train_common  # noqa: E402

from cogvideox import evaluation, synthetic  # noqa: E402
from cogvideox.schedules import SchedulerConfig, alphas_cumprod  # noqa: E402

log = logging.getLogger("tiny.caption_sensitivity")
WORDS = {"colour": synthetic.PALETTE, "shape": synthetic.SHAPES, "direction": synthetic.DIRECTIONS}


@torch.no_grad()
def probe(
    models: tiny_eval.Models, size: int, timesteps: list[int], clips: int = 12, seed: int = 777, **clip_options
) -> dict:
    """``{t: {"colour": change, "shape": change, "direction": change, "shape_ok": share}}``."""
    model, _ = models.t2v
    scale = models.vae.config.scaling_factor
    table = alphas_cumprod(SchedulerConfig(snr_shift_scale=train_common.SNR_SHIFT))
    gen = torch.Generator().manual_seed(seed)
    cases = [tiny_eval.CAPTIONS[(k * 4) % len(tiny_eval.CAPTIONS)] for k in range(clips)]  # every shape
    videos = [synthetic.make_clip(gen, colour=c, shape=s, direction=d, size=size, **clip_options) for c, s, d in cases]
    latents = [models.vae.encode_moments(v.video[None])[0] * scale for v in videos]  # posterior means [1, 16, T, h, w]
    out = {}
    for t in timesteps:
        a = table[t].float()
        noise = torch.Generator().manual_seed(seed + t)
        change = {word: 0.0 for word in WORDS}
        shape_ok = 0
        for (colour, shape, direction), clip, x0 in zip(cases, videos, latents, strict=True):
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=noise)

            def predict(caption: str, xt=xt, a=a, t=t) -> torch.Tensor:  # x0 from the v-prediction
                return a.sqrt() * xt - (1 - a).sqrt() * model(xt, torch.tensor([t]), models.encode([caption]))

            own = predict(clip.caption)
            words = {"colour": colour, "shape": shape, "direction": direction}
            for word, options in WORDS.items():
                other = next(o for o in options if o != words[word])
                swapped = predict(synthetic.caption_for(**{**words, word: other}))
                change[word] += float((swapped - own).norm() / own.norm()) / len(cases)
            decoded = models.vae.decode(own / scale)[0].clamp(-1, 1)
            shape_ok += evaluation.judge_clip(decoded, colour, shape, direction).shape_ok
        out[t] = {**change, "shape_ok": shape_ok / len(cases)}
        log.info("t %d (alpha_bar %.3f): x0 change with the word swapped: colour %.4f, shape %.4f, direction "
                 "%.4f; single-step x0 shape right %.0f%%", t, a, change["colour"], change["shape"],
                 change["direction"], 100 * out[t]["shape_ok"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=Path, default=tiny_eval.TINY, help="folder of the models")
    parser.add_argument("--size", type=int, default=synthetic.TINY_SIZE, help="canvas the model was trained on")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 200, 400, 700])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    train_common.add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    models = tiny_eval.Models.load(i2v=False, folder=args.tiny.resolve())
    probe(models, args.size, args.timesteps, args.clips, object_size=tuple(args.object_size),
          travel=tuple(args.travel))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
