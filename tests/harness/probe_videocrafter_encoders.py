"""VideoCrafter's conditioning through ComfyUI's own CLIP and CLIP_VISION against the reference
embedders (run inside the ComfyUI tree, not by pytest): prints one JSON line of measurements.

Usage: ``cd build/comfyui && python <this file> <pack dir> [--fp32]`` (``--fp32``: ComfyUI's
``--fp32-text-enc``, encoders kept in float32 instead of core's default fp16). Rebuilds the real-size random
weights of tools/make_videocrafter_encoder_fixtures.py in the checkpoint layout, loads them with
the pack's checkpoint code (core SD2 CLIP, core CLIP vision) and runs the pack's image path.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import types


def _compare(ours, sub, total, summary, subsample) -> dict:
    """Our output against the stored subsample (max error) and whole-tensor sums (relative)."""
    part = subsample(ours)
    scale = total[2].item()
    return {
        "max_err": (part.double() - sub.double()).abs().max().item(),
        "scale": scale,
        "sum_rel_err": abs(summary(ours)[0].item() - total[0].item()) / max(1.0, abs(total[0].item())),
        "sumsq_rel_err": abs(summary(ours)[1].item() - total[1].item()) / total[1].item(),
    }


def main(pack_dir: str, fp32: bool) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from probe_videocrafter import _load_pack

    sys.path.insert(0, os.getcwd())
    import comfy.options

    # ComfyUI stores text and image encoders in fp16 by default (weights rounded to 11 bits)
    sys.argv = ["main.py", "--cpu", *(["--fp32-text-enc"] if fp32 else [])]
    comfy.options.enable_args_parsing()
    _load_pack(pack_dir)
    sys.path.insert(0, pack_dir)

    import torch
    from safetensors import safe_open
    from vc_probe_pack.nodes import videocrafter as nodes
    from vc_probe_pack.nodes import videocrafter_loading as loading
    from vc_probe_pack.videocrafter.configs import ResamplerConfig
    from vc_probe_pack.videocrafter.image import clip_image_input, unconditional_image
    from vc_probe_pack.videocrafter.resampler import Resampler

    from tools import make_videocrafter_encoder_fixtures as enc
    from tools.make_videocrafter_fixtures import random_tensors

    torch.set_num_threads(2)
    path = os.path.join(pack_dir, "tests", "fixtures", "videocrafter", "encoders.safetensors")
    with safe_open(path, "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    report: dict = {}

    # text: core SD2 CLIP (penultimate layer + final norm) from cond_stage_model.model.*
    shapes = {k: tuple(v) for k, v in json.loads(meta["text_shapes"]).items()}
    sd = {f"{loading.TEXT_PREFIX}{k}": v for k, v in random_tensors(shapes, enc.TEXT_SEED)}
    clip = loading.load_clip(sd)
    del sd
    gc.collect()
    conds = [clip.encode_from_tokens(clip.tokenize(p)).float() for p in json.loads(meta["prompts"])]
    both = torch.cat(conds)  # [2, 77, 1024], the reference's batch
    report["text"] = _compare(both, t["text_sub"], t["text_sum"], enc.summary, enc.subsample)
    del clip
    gc.collect()

    # image: core CLIP vision from embedder.model.visual.*, the pack's preprocessing and resampler
    shapes = {k: tuple(v) for k, v in json.loads(meta["vision_shapes"]).items()}
    prefix = loading.VISION_PREFIX[: -len("visual.")]  # "embedder.model."
    sd = {f"{prefix}{k}": v for k, v in random_tensors(shapes, enc.VISION_SEED) if k.startswith("visual.")}
    clip_vision = loading.load_clip_vision(sd)
    del sd
    gc.collect()
    every = slice(0, None, 16)
    with torch.no_grad():
        hidden = clip_vision.model(pixel_values=clip_image_input(enc.reference_image()), intermediate_output=-2)[0]
        hidden_uncond = clip_vision.model(
            pixel_values=clip_image_input(unconditional_image(1)), intermediate_output=-2
        )[0]
    sub = lambda x, tokens=every: enc.subsample(x, tokens)  # noqa: E731
    report["vision"] = _compare(hidden.float(), t["vision_sub"], t["vision_sum"], enc.summary, sub)
    report["vision_uncond"] = _compare(
        hidden_uncond.float(), t["vision_uncond_sub"], t["vision_uncond_sum"], enc.summary, sub
    )

    resampler = Resampler(ResamplerConfig()).eval()
    params = dict(resampler.named_parameters())
    res_shapes = {k: tuple(v) for k, v in json.loads(meta["resampler_shapes"]).items()}
    with torch.no_grad():
        for name, value in random_tensors(res_shapes, enc.RESAMPLER_SEED):
            params[name].copy_(value)
    base = types.SimpleNamespace(image_proj_model=resampler)
    node = nodes.VideoCrafterImageConditioning
    full = lambda x: enc.subsample(x, slice(None))  # noqa: E731
    cond = node._image_tokens(base, clip_vision, enc.reference_image())
    uncond = node._image_tokens(base, clip_vision, unconditional_image(1))
    report["image_cond"] = _compare(cond.float(), t["image_cond_sub"], t["image_cond_sum"], enc.summary, full)
    report["image_uncond"] = _compare(uncond.float(), t["image_uncond_sub"], t["image_uncond_sum"], enc.summary, full)
    for key in ("text", "vision", "image_cond"):
        report[f"{key}_reference_fp32_vs_fp64"] = json.loads(meta[f"{key}_fp32_vs_fp64"])
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], "--fp32" in sys.argv[2:]))
