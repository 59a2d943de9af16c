"""What CogVideoX Sampler refuses before it runs, each with the node to change and how.

Core conditioning and latent options the pack's own sampler does not apply (timestep ranges,
areas, masks, several prompts, noise masks) are refused, never silently dropped; so are text
embeddings of another length than the model reads, an image conditioning of another size than
the latent, and inputs that already hold NaN (so a broken input is not blamed on float16).
"""

from __future__ import annotations

import torch

from ..cogvideox import frames as fr

CORE_KSAMPLER = "CogVideoX Model Loader's MODEL output with core KSampler"

# Keys core conditioning nodes set, what they mean to a user, and the value that changes nothing.
_NO_CHANGE = object()
CORE_OPTIONS: dict[str, tuple[str, object]] = {
    "start_percent": ("a timestep range (ConditioningSetTimestepRange)", 0.0),
    "end_percent": ("a timestep range (ConditioningSetTimestepRange)", 1.0),
    "area": ("an area (ConditioningSetArea)", _NO_CHANGE),
    "mask": ("a mask (ConditioningSetMask)", _NO_CHANGE),
    "strength": ("a strength (ConditioningSetAreaStrength)", 1.0),
    "control": ("a ControlNet (Apply ControlNet)", _NO_CHANGE),
    "gligen": ("GLIGEN boxes", _NO_CHANGE),
    "hooks": ("hooks (Set CLIP Hooks / Cond Set Props)", _NO_CHANGE),
    "unclip_conditioning": ("unCLIP image conditioning", _NO_CHANGE),
}


def conditioning_problems(conditioning, which: str, text_tokens: int, text_dim: int) -> list[str]:
    """Why a CONDITIONING cannot drive the pack's sampler as given (empty when it can)."""
    if not conditioning:
        return [f"the {which} conditioning is empty; connect CogVideoX Text Encode"]
    if len(conditioning) > 1:
        return [
            f"the {which} conditioning holds {len(conditioning)} prompts (ConditioningCombine or a scheduled "
            "prompt); CogVideoX Sampler uses exactly one: encode one prompt with CogVideoX Text Encode, or use "
            f"{CORE_KSAMPLER}, which weights several prompts"
        ]
    cond, extra = conditioning[0]
    problems = []
    seen = set()
    for key, (what, neutral) in CORE_OPTIONS.items():
        value = extra.get(key)
        if value is None or (neutral is not _NO_CHANGE and value == neutral) or what in seen:
            continue
        seen.add(what)
        problems.append(
            f"the {which} conditioning carries {what}, which CogVideoX Sampler does not apply; remove that "
            f"node or use {CORE_KSAMPLER}"
        )
    if cond.ndim != 3:
        problems.append(
            f"the {which} conditioning has shape {tuple(cond.shape)}; expected text embeddings "
            f"[1, {text_tokens}, {text_dim}] from CogVideoX Text Encode"
        )
    elif cond.shape[2] != text_dim:
        problems.append(
            f"the {which} conditioning has {cond.shape[2]}-wide text embeddings, the model reads {text_dim}; "
            "encode the prompt with CogVideoX Text Encode and the T5 encoder that belongs to the model"
        )
    elif cond.shape[1] != text_tokens:
        problems.append(
            f"the {which} conditioning has {cond.shape[1]} text tokens, CogVideoX reads exactly {text_tokens}; "
            "encode the prompt with CogVideoX Text Encode (core CLIP Text Encode and ConditioningConcat give "
            "other lengths)"
        )
    elif not torch.isfinite(cond).all():
        problems.append(f"the {which} conditioning holds NaN or infinite values; check the text encoder")
    return problems


def latent_problems(latent: dict) -> list[str]:
    """Core latent options the sampler does not apply."""
    if latent.get("noise_mask") is not None:
        return [
            "the latent carries a noise mask (SetLatentNoiseMask), which CogVideoX Sampler does not apply; "
            f"remove that node or use {CORE_KSAMPLER}"
        ]
    return []


def _px(h: int, w: int) -> str:
    return f"{w * fr.SPATIAL_COMPRESSION}x{h * fr.SPATIAL_COMPRESSION}"


def image_latent_problems(image_latent: torch.Tensor, samples: torch.Tensor) -> list[str]:
    """Why the image conditioning of CogVideoX Image To Video does not fit the latent to sample."""
    fix = (
        "connect CogVideoX Image To Video's latent output to the sampler, or give CogVideoX Empty Latent the same "
    )
    problems = []
    if image_latent.ndim != 5 or image_latent.shape[1] != samples.shape[1]:
        return [f"the image conditioning has shape {tuple(image_latent.shape)}; make it with CogVideoX Image To Video"]
    (ih, iw), (h, w) = image_latent.shape[-2:], samples.shape[-2:]
    if (ih, iw) != (h, w):
        problems.append(
            f"the image from CogVideoX Image To Video is {_px(ih, iw)} (its width and height) but the latent is "
            f"{_px(h, w)}; {fix}width and height as CogVideoX Image To Video"
        )
    b, n = image_latent.shape[0], samples.shape[0]
    if b not in (1, n):
        problems.append(
            f"CogVideoX Image To Video made {b} videos (batch_size={b}) but the latent holds {n}; "
            f"{fix}batch_size"
        )
    if not torch.isfinite(image_latent).all():
        problems.append(
            "the image conditioning holds NaN or infinite values; the image given to CogVideoX Image To Video "
            "is broken (this is not a precision problem)"
        )
    return problems


def non_finite_cause(network: torch.nn.Module, source: str) -> str:
    """The likely cause of NaN/inf in the model output: float16 overflow, or broken weights."""
    dtypes = {p.dtype for p in network.parameters() if p.is_floating_point()}
    if torch.float16 in dtypes:
        return "CogVideoX overflows in float16: set weight_dtype to bf16 in CogVideoX Model Loader"
    broken = next((n for n, p in network.named_parameters() if p.is_floating_point() and not p.isfinite().all()), None)
    if broken is not None:
        return (
            f"the weights of {source!r} hold NaN/inf values (e.g. {broken}), this is not a float16 overflow; "
            "download the file again or pick another in CogVideoX Model Loader"
        )
    return (
        "the weights and inputs are finite and the model does not run in float16; lower cfg, or try another "
        "scheduler or seed"
    )
