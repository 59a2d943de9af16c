"""Measure the shipped tiny model with the model-free judge (``cogvideox/evaluation.py``).

    .venv/bin/python tools/tiny/evaluate.py                  # VAE, T2V and I2V, 3 seeds, all 48 captions
    .venv/bin/python tools/tiny/evaluate.py --only vae --clips 16
    .venv/bin/python tools/tiny/evaluate.py --only t2v --seeds 100 --captions 12 -v

- **vae**: encode-decode round trip (posterior mean) of held-out synthetic clips (a generator
  seed training never used): PSNR, shape seen, mask IoU with the captioned shape's ideal mask and
  IoU with the clip's own drawn masks.
- **t2v**: every caption at every seed through ``cogvideox.pipeline.sample`` with the shipped
  workflow's settings (``workflows/api/text_to_video.json``: size, frames, steps, CFG, solver),
  one caption per run at batch 1, as the nodes run it (the seed is the sampler's seed).
- **i2v**: fresh first frames (frame 0 of synthetic clips with a held-out generator seed:
  position, size, colour, shape and direction drawn) with their captions, through the pipeline
  with ``workflows/api/image_to_video.json``'s settings (noise augmentation 0, the posterior mean
  of the image): IoU of frame 0's object with the input's, direction, colour in every frame,
  object area within +-20% of the input's in every frame.
- **inp** (not in the default set): the Fun InP model from the first and last frame of fresh clips
  (``workflows/api/first_last_frame.json``'s settings): judged like t2v, plus the distance of the
  generated first / last frame's object from the given one's.
- **lora** (not in the default set): the T2V with the shipped blue LoRA merged
  (``workflows/api/text_to_video_lora.json``'s settings), judged like t2v but against blue.

Rates are shares of clips; the seeds default to ones the tests do not use.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cogvideox import evaluation, pipeline, synthetic  # noqa: E402
from cogvideox.conditioning import image_latent  # noqa: E402
from cogvideox.loading import load_transformer, load_vae  # noqa: E402

log = logging.getLogger("tiny.evaluate")

TINY = ROOT / "tiny"
T5_FILE = TINY / "text_encoders" / "cogvideox_tiny_t5.safetensors"
VAE_FILE = TINY / "vae" / "cogvideox_tiny_vae.safetensors"
T2V_FILE = TINY / "diffusion_models" / "cogvideox_tiny_t2v.safetensors"
I2V_FILE = TINY / "diffusion_models" / "cogvideox_tiny_i2v.safetensors"
INP_FILE = TINY / "diffusion_models" / "cogvideox_tiny_fun_inp.safetensors"
LORA_FILE = TINY / "loras" / "cogvideox_tiny_blue_lora.safetensors"
LORA_COLOUR = "blue"  # the shipped LoRA draws every shape in it, whatever the caption's colour
SEEDS = (100, 101, 102)  # the tests use 0, 1, 2, 3 and 42
VAE_SEED = 777  # held-out clips: training draws from seeds 1, 11 and 12345 (its eval)
I2V_SEED = 4242
CAPTIONS = list(itertools.product(synthetic.PALETTE, synthetic.SHAPES, synthetic.DIRECTIONS))  # 48


@dataclass(frozen=True)
class Settings:
    """The sampler and latent settings of a shipped workflow."""

    width: int
    height: int
    frames: int
    steps: int
    cfg: float
    sampler: str

    @classmethod
    def from_workflow(cls, name: str) -> Settings:
        api = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
        by_type = {node["class_type"]: node["inputs"] for node in api.values()}
        size = next(by_type[t] for t in ("CogVideoXEmptyLatent", "CogVideoXImageToVideo",
                                         "CogVideoXFunInpaintConditioning") if t in by_type)
        sampler = by_type["CogVideoXSampler"]
        return cls(size["width"], size["height"], size["frames"], sampler["steps"], sampler["cfg"],
                   sampler["scheduler"])

    def latent_shape(self) -> tuple[int, int, int, int]:
        return (16, (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8)  # [C, T, h, w]


def text_encoder(t5_file: Path = T5_FILE) -> Callable[[list[str]], torch.Tensor]:
    """Prompts -> ``[N, 226, D]`` with the shipped tiny T5 (the trainer's encoder and tokenizer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train  # tools/tiny/train.py

    t5, tok = train.load_t5(t5_file), train.tokenizer()
    return lambda prompts: train.encode_prompts(t5, tok, prompts)


@dataclass
class Models:
    encode: Callable[[list[str]], torch.Tensor]
    vae: torch.nn.Module
    t2v: tuple | None = None  # (model, variant)
    i2v: tuple | None = None
    inp: tuple | None = None  # the Fun InP model

    @classmethod
    def load(cls, t2v: bool = True, i2v: bool = True, folder: Path = TINY, inp: bool = False) -> Models:
        """The tiny models in ``folder`` (ComfyUI's model-folder layout; default the shipped ``tiny/``)."""

        def at(path: Path) -> Path:
            return folder / path.relative_to(TINY)

        return cls(
            text_encoder(at(T5_FILE)),
            load_vae(at(VAE_FILE)).float().eval(),
            load_transformer(at(T2V_FILE), dtype=torch.float32) if t2v else None,
            load_transformer(at(I2V_FILE), dtype=torch.float32) if i2v else None,
            load_transformer(at(INP_FILE), dtype=torch.float32) if inp else None,
        )


@dataclass
class Judged:
    caption: str
    seed: int
    judgement: evaluation.ClipJudgement
    extra: dict  # per-task measures (PSNR, frame-0 IoU, ...)

    def line(self) -> str:
        extra = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.extra.items())
        ok = "ok " if self.judgement.all_ok else "BAD"
        return f"{ok} seed {self.seed} {self.caption!r}: {self.judgement.summary()}; {extra}"


# ------------------------------------------------------------------------------ runs
def generate(
    vae: torch.nn.Module, model_variant: tuple, settings: Settings, positive, negative, seed: int, **inputs
) -> torch.Tensor:
    """One clip ``[3, F, H, W]`` in [-1, 1] at batch 1 with a workflow's ``settings``, as the sampler
    node runs it; ``inputs``: ``pipeline.sample``'s conditioning (``image_latent``, ``concat_latent``...)."""
    model, variant = model_variant
    latent = pipeline.sample(
        model, variant, torch.zeros(1, *settings.latent_shape()), positive, negative,
        steps=settings.steps, cfg=settings.cfg, sampler=settings.sampler, seed=seed, **inputs,
    )
    return vae.decode(latent)[0].clamp(-1, 1)


@torch.no_grad()
def vae_round_trip(vae, clips: int = 48, seed: int = VAE_SEED, size: int | None = None, **clip_options) -> list[Judged]:
    """Encode (posterior mean) and decode ``clips`` held-out clips, 48 captions in turn, on a
    ``size`` canvas (default: the VAE's ``sample_width``, the canvas it was trained on); ``clip_options``:
    make_clip's ``object_size`` / ``travel``."""
    size = size or vae.config.sample_width
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(clips):
        colour, shape, direction = CAPTIONS[k % len(CAPTIONS)]
        clip = synthetic.make_clip(gen, colour=colour, shape=shape, direction=direction, size=size, **clip_options)
        rec = vae.decode(vae.encode(clip.video[None]))[0].clamp(-1, 1)  # [3, F, H, W]
        judged = evaluation.judge_clip(rec, colour, shape, direction)
        drawn = evaluation.object_masks(clip.video)  # [F, H, W]
        drawn_iou = sum(map(evaluation.iou, evaluation.object_masks(rec), drawn)) / len(drawn)
        extra = {"psnr": synthetic.psnr(rec, clip.video), "drawn_iou": drawn_iou}
        out.append(Judged(clip.caption, seed, judged, extra))
    return out


@torch.no_grad()
def text_to_video(
    models: Models,
    captions: Sequence[tuple[str, str, str]] = CAPTIONS,
    seeds: Sequence[int] = SEEDS,
    settings: Settings | None = None,
    judge_colour: str | None = None,
    **options,
) -> list[Judged]:
    """Every caption at every seed, one run each at batch 1 (as the sampler node runs it).

    ``judge_colour``: the colour every clip should have instead of the caption's (a LoRA that recolours)."""
    settings = settings or Settings.from_workflow("text_to_video")
    negative = models.encode([""])
    out = []
    for colour, shape, direction in captions:
        caption = synthetic.caption_for(colour, shape, direction)
        positive = models.encode([caption])
        for seed in seeds:
            video = generate(models.vae, models.t2v, settings, positive, negative, seed, **options)
            judged = evaluation.judge_clip(video, judge_colour or colour, shape, direction)
            out.append(Judged(caption, seed, judged, {}))
    return out


def with_lora(models: Models, lora_file: Path = LORA_FILE, strength: float = 1.0) -> Models:
    """``models`` with the LoRA merged into a copy of the T2V (as the CogVideoX LoRA node patches it)."""
    import copy

    from cogvideox import lora

    model, variant = models.t2v
    parsed = lora.load_lora(lora_file, lora.linear_targets(model))
    return dataclasses.replace(models, t2v=(lora.merge(copy.deepcopy(model), parsed, strength), variant))


def first_frames(
    count: int = 48, seed: int = I2V_SEED, settings: Settings | None = None, **clip_options
) -> list[synthetic.Clip]:
    """Fresh I2V cases: synthetic clips (48 captions in turn, position, size and travel drawn, ``clip_options``:
    make_clip's ``object_size`` / ``travel``); frame 0 is the input."""
    settings = settings or Settings.from_workflow("image_to_video")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        colour, shape, direction = CAPTIONS[k % len(CAPTIONS)]
        out.append(synthetic.make_clip(gen, colour=colour, shape=shape, direction=direction, size=settings.width,
                                       **clip_options))
    return out


@torch.no_grad()
def image_to_video(
    models: Models,
    cases: Sequence[synthetic.Clip],
    seeds: Sequence[int] = SEEDS,
    settings: Settings | None = None,
    max_size_change: float = 0.2,
) -> list[Judged]:
    """Each case's first frame and caption at every seed, batch 1; judged against the input image."""
    settings = settings or Settings.from_workflow("image_to_video")
    negative = models.encode([""])
    out = []
    for clip in cases:
        image = clip.video[:, :1]  # [3, 1, H, W]
        positive = models.encode([clip.caption])
        img_latent = image_latent(models.vae, image[None])
        input_area = int(evaluation.object_masks(image)[0].sum())
        for seed in seeds:
            video = generate(models.vae, models.i2v, settings, positive, negative, seed, image_latent=img_latent)
            judged = evaluation.judge_clip(video, clip.colour, clip.shape, clip.direction)
            ratios = [a / input_area for a in judged.areas]
            out.append(Judged(clip.caption, seed, judged, {
                "frame0_iou": evaluation.first_frame_iou(video[:, 0], image[:, 0]),
                "size_lo": min(ratios),
                "size_hi": max(ratios),
                "size_ok": all(abs(r - 1) <= max_size_change for r in ratios),
            }))
    return out


@torch.no_grad()
def start_end_to_video(
    models: Models,
    cases: Sequence[synthetic.Clip],
    seeds: Sequence[int] = SEEDS,
    settings: Settings | None = None,
    noise_aug: float = 0.0563,
) -> list[Judged]:
    """Fun InP: each case's first and last frame as the start and end image (the ``first_last_frame``
    workflow's conditioning: the masked video, the reference's pixel noise on the known frames, its
    mask on the latent grid) and its caption, every seed at batch 1; judged like T2V, plus how far
    the generated first / last frame's object is from the given one's (px)."""
    from cogvideox import conditioning

    settings = settings or Settings.from_workflow("first_last_frame")
    negative = models.encode([""])
    shape = settings.latent_shape()
    out = []
    for clip in cases:
        video = clip.video[None]  # [1, 3, F, H, W]
        known, mask = conditioning.start_end_video(video[:, :, :1], video[:, :, -1:], video.shape[2])
        positive = models.encode([clip.caption])
        want = synthetic.centroids(clip.video[:, [0, -1]])  # [2, 2]
        for seed in seeds:
            masked = conditioning.noise_augment_known(
                conditioning.masked_video(known, mask), noise_aug, torch.Generator().manual_seed(seed))
            got = generate(models.vae, models.inp, settings, positive, negative, seed,
                           concat_latent=models.vae.encode(masked),
                           concat_mask=conditioning.inpaint_mask_latent(mask, *shape[1:]))
            shifts = (synthetic.centroids(got[:, [0, -1]]) - want).norm(dim=1).nan_to_num(float("inf")).tolist()
            judged = evaluation.judge_clip(got, clip.colour, clip.shape, clip.direction)
            out.append(Judged(clip.caption, seed, judged, {"start_shift": shifts[0], "end_shift": shifts[1]}))
    return out


# ------------------------------------------------------------------------------ tables
def vae_table(judged: list[Judged]) -> dict[str, float]:
    s = evaluation.summarise(j.judgement for j in judged)
    psnrs = sorted(j.extra["psnr"] for j in judged)
    return {
        "clips": s.clips,
        "PSNR mean dB": sum(psnrs) / len(psnrs),
        "PSNR worst dB": psnrs[0],
        "shape right": s.shape,
        "mask IoU (captioned shape)": s.iou,
        "mask IoU (drawn masks)": sum(j.extra["drawn_iou"] for j in judged) / len(judged),
        "colour right (every frame)": s.colour,
        "direction right": s.direction,
        "speckle": s.speckle,
    }


def t2v_table(judged: list[Judged]) -> dict[str, float]:
    s = evaluation.summarise(j.judgement for j in judged)
    return {
        "clips": s.clips,
        "colour right (every frame)": s.colour,
        "direction right": s.direction,
        "shape right": s.shape,
        "mask IoU": s.iou,
        "speckle": s.speckle,
        "one object (share of frames)": s.one_object,
        "one object in every frame (clips)": s.one_object_clips,
        "smooth (jerk <= 2)": s.smooth,
        "jerk median (max/mean step share)": s.jerk,
        "size within +-20% of frame 0": s.size_ok,
        "everything right": s.all_ok,
    }


def inp_table(judged: list[Judged], limit: float = 3.0) -> dict[str, float]:
    """``limit``: px (the known-answer check's, issue 20's 3 px at both ends), also the share within twice that."""
    s = evaluation.summarise(j.judgement for j in judged)
    n = len(judged)
    return {
        "clips": s.clips,
        f"start within {limit:g} px": sum(j.extra["start_shift"] <= limit for j in judged) / n,
        f"end within {limit:g} px": sum(j.extra["end_shift"] <= limit for j in judged) / n,
        f"both ends within {limit:g} px": sum(max(j.extra["start_shift"], j.extra["end_shift"]) <= limit
                                          for j in judged) / n,
        f"end within {2 * limit:g} px": sum(j.extra["end_shift"] <= 2 * limit for j in judged) / n,
        "end shift median px": sorted(j.extra["end_shift"] for j in judged)[n // 2],
        "colour right (every frame)": s.colour,
        "direction right": s.direction,
        "shape right": s.shape,
        "mask IoU": s.iou,
        "speckle": s.speckle,
        "one object (share of frames)": s.one_object,
    }


def i2v_table(judged: list[Judged]) -> dict[str, float]:
    s = evaluation.summarise(j.judgement for j in judged)
    n = len(judged)
    return {
        "clips": s.clips,
        "frame-0 object IoU mean": sum(j.extra["frame0_iou"] for j in judged) / n,
        "frame-0 object IoU >= 0.9": sum(j.extra["frame0_iou"] >= 0.9 for j in judged) / n,
        "direction right": s.direction,
        "colour kept in every frame": s.colour,
        "size within +-20% of the input": sum(bool(j.extra["size_ok"]) for j in judged) / n,
        "size max / input (median)": sorted(j.extra["size_hi"] for j in judged)[n // 2],
        "shape right": s.shape,
        "speckle": s.speckle,
    }


def format_table(title: str, rows: dict[str, float]) -> str:
    lines = [f"## {title}", "| measure | value |", "|---|---|"]
    for name, value in rows.items():
        if isinstance(value, int):
            text = str(value)
        elif "dB" in name or "IoU" in name or "median" in name:
            text = f"{value:.2f}"
        else:
            text = f"{value:.1%}"
        lines.append(f"| {name} | {text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["vae", "t2v", "i2v", "lora", "inp"], action="append",
                        help="lora: the T2V with the shipped blue LoRA, judged against blue; inp: the Fun InP "
                             "model from start + end frames")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--captions", type=int, default=len(CAPTIONS), help="first N of the 48 captions (t2v)")
    parser.add_argument("--clips", type=int, default=48, help="VAE clips and I2V first frames")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", type=Path, default=TINY, help="folder of the models (default: the shipped tiny/)")
    parser.add_argument("--size", type=int, default=None,
                        help="canvas (square) instead of the workflows' width and height (a model trained larger)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_common  # tools/tiny/train_common.py: the trainer's data options, for the VAE / I2V cases

    train_common.add_data_arguments(parser)
    parser.add_argument("--cfg", type=float, default=None, help="guidance instead of the workflows' (a study)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps instead of the workflows'")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per clip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    parts = args.only or ["vae", "t2v", "i2v"]
    models = Models.load(t2v="t2v" in parts or "lora" in parts, i2v="i2v" in parts, folder=args.tiny.resolve(),
                         inp="inp" in parts)

    def settings(workflow: str) -> Settings:
        s = Settings.from_workflow(workflow)
        if args.size is not None:
            s = dataclasses.replace(s, width=args.size, height=args.size)
        if args.cfg is not None:
            s = dataclasses.replace(s, cfg=args.cfg)
        return s if args.steps is None else dataclasses.replace(s, steps=args.steps)

    data = {"object_size": tuple(args.object_size), "travel": tuple(args.travel)}
    out = []
    for part in parts:
        t0 = time.monotonic()
        if part == "vae":
            judged = vae_round_trip(models.vae, args.clips, size=args.size, **data)
            table = format_table(f"VAE round trip, {args.clips} held-out clips", vae_table(judged))
        elif part in ("t2v", "lora"):
            s = settings("text_to_video" if part == "t2v" else "text_to_video_lora")
            lora = part == "lora"
            judged = text_to_video(with_lora(models, args.tiny.resolve() / LORA_FILE.relative_to(TINY))
                                   if lora else models, CAPTIONS[: args.captions], args.seeds, s,
                                   judge_colour=LORA_COLOUR if lora else None)
            table = format_table(
                f"T2V{' + the blue LoRA (judged against blue)' if lora else ''}, {args.captions} captions x "
                f"seeds {args.seeds}, {s.steps} steps, CFG {s.cfg}, {s.width}x{s.height}x{s.frames}",
                t2v_table(judged))
        elif part == "inp":
            s = settings("first_last_frame")
            judged = start_end_to_video(models, first_frames(args.clips, settings=s, **data), args.seeds, s)
            table = format_table(f"Fun InP from start + end frames, {args.clips} fresh clips x seeds {args.seeds}, "
                                 f"{s.steps} steps, CFG {s.cfg}", inp_table(judged))
        else:
            s = settings("image_to_video")
            judged = image_to_video(models, first_frames(args.clips, settings=s, **data), args.seeds, s)
            table = format_table(f"I2V, {args.clips} fresh first frames x seeds {args.seeds}, {s.steps} steps, "
                                 f"CFG {s.cfg}", i2v_table(judged))
        if args.verbose:
            log.info("\n".join(j.line() for j in judged))
        log.info("%s: %.0f s", part, time.monotonic() - t0)
        out.append(table)
    sys.stdout.write("\n\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
