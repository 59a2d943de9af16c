"""Golden fixtures for VideoCrafter's text and image conditioning from the reference embedders.

Runs the reference's ``FrozenOpenCLIPEmbedder`` (SD2's OpenCLIP ViT-H text tower, penultimate
layer) and ``FrozenOpenCLIPImageEmbedderV2`` (the ViT-H image tower, all tokens of the last
layer without ``ln_post``, after its kornia resize) and the I2V ``Resampler`` at their real sizes
with random weights (``random_tensors``: sorted names, one seeded generator), and writes a
subsample of their outputs plus whole-tensor sums to
``tests/fixtures/videocrafter/encoders.safetensors``, with the parameter names and shapes in its
metadata so a test can rebuild the same weights in the checkpoint layout (``cond_stage_model.model.*``,
``embedder.model.visual.*``, ``image_proj_model.*``) and load them through ComfyUI's own CLIP and
CLIP_VISION.

Needs, besides a checkout of the reference (see make_videocrafter_fixtures.py), the OpenCLIP version
the reference pins, kept out of the project's environment::

    .venv/bin/python -m pip install --target /tmp/ocpkgs --no-deps open_clip_torch==2.22.0 ftfy wcwidth
    PYTHONPATH=/tmp/ocpkgs .venv/bin/python tools/make_videocrafter_encoder_fixtures.py --reference /tmp/VideoCrafter

Stubbed inside this tool (not exercised): ``torchvision`` (OpenCLIP's training transforms and
``FrozenBatchNorm2d`` are imported at module load), ``pytorch_lightning``, ``cv2``. The image
embedder is built with ``version=None``: random weights instead of downloading pretrained ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.make_videocrafter_fixtures import OUT, _install_stubs, random_tensors  # noqa: E402

logger = logging.getLogger("make_videocrafter_encoder_fixtures")

PROMPTS = ("a red ball rolls to the left", "")
TEXT_SEED, VISION_SEED, RESAMPLER_SEED, IMAGE_SEED = 11, 12, 13, 14
IMAGE_SIZE = (320, 512)  # the I2V model's frame size: the embedder squashes it to 224x224
TOKENS, CHANNELS = slice(0, 12), slice(0, None, 16)  # what is stored of each output


def reference_image() -> torch.Tensor:
    """The test image, a ComfyUI IMAGE ``[1, H, W, 3]`` in 0..1: a gradient with seeded noise."""
    gen = torch.Generator().manual_seed(IMAGE_SEED)
    h, w = IMAGE_SIZE
    ramp = torch.linspace(0, 1, w).view(1, 1, w, 1).expand(1, h, w, 3)
    return (0.7 * ramp + 0.3 * torch.rand(1, h, w, 3, generator=gen)).clamp(0, 1)


def subsample(x: torch.Tensor, tokens: slice = TOKENS) -> torch.Tensor:
    return x[:, tokens, CHANNELS].contiguous()


def summary(x: torch.Tensor) -> torch.Tensor:
    """Whole-tensor checks: sum, sum of squares, max |x| (float64)."""
    x = x.double()
    return torch.stack([x.sum(), (x * x).sum(), x.abs().max()])


def _spread(fp32: torch.Tensor, fp64: torch.Tensor) -> str:
    """How far the reference's own float32 run is from its float64 run: JSON max error and max |x|."""
    return json.dumps({"max_err": (fp32.double() - fp64).abs().max().item(), "scale": fp64.abs().max().item()})


def _install_torchvision_stub() -> None:
    tv = sys.modules["torchvision"]
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")

    class _Unused:
        def __init__(self, *args, **kwargs):
            pass

    for name in (
        "Normalize",
        "Compose",
        "RandomResizedCrop",
        "InterpolationMode",
        "ToTensor",
        "Resize",
        "CenterCrop",
        "ColorJitter",
        "Grayscale",
    ):
        setattr(transforms, name, _Unused)
    transforms.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic", BILINEAR="bilinear")
    transforms.functional = functional
    misc.FrozenBatchNorm2d = _Unused
    ops.misc = misc
    tv.transforms, tv.ops = transforms, ops
    for key, module in {
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
        "torchvision.ops": ops,
        "torchvision.ops.misc": misc,
    }.items():
        sys.modules.setdefault(key, module)


def _randomize(module: torch.nn.Module, seed: int) -> dict[str, list[int]]:
    params = dict(module.named_parameters())
    shapes = {k: list(v.shape) for k, v in params.items()}
    with torch.no_grad():
        for name, value in random_tensors({k: tuple(v) for k, v in shapes.items()}, seed):
            params[name].copy_(value)
    return shapes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of AILab-CVC/VideoCrafter")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    import transformers  # noqa: F401 - before the stubs: it probes for a real torchvision at import
    from safetensors.torch import save_file

    _install_stubs()
    _install_torchvision_stub()
    sys.path.insert(0, str(args.reference.resolve()))
    torch.set_num_threads(2)
    from lvdm.modules.encoders.condition import FrozenOpenCLIPEmbedder, FrozenOpenCLIPImageEmbedderV2
    from lvdm.modules.encoders.ip_resampler import Resampler

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {"prompts": json.dumps(PROMPTS)}

    text = FrozenOpenCLIPEmbedder(arch="ViT-H-14", device="cpu", layer="penultimate").eval()
    meta["text_shapes"] = json.dumps(_randomize(text.model, TEXT_SEED))
    with torch.no_grad():
        z = text(list(PROMPTS))  # [2, 77, 1024]
        text.model.double()
        text.model.attn_mask = text.model.attn_mask.double()
        z64 = text(list(PROMPTS))
    tensors["text_sub"], tensors["text_sum"] = subsample(z), summary(z)
    meta["text_fp32_vs_fp64"] = _spread(z, z64)
    del text, z, z64
    logger.info("text done")

    vision = FrozenOpenCLIPImageEmbedderV2(arch="ViT-H-14", version=None, device="cpu").eval()
    meta["vision_shapes"] = json.dumps(_randomize(vision.model, VISION_SEED))
    image = reference_image().movedim(-1, 1) * 2 - 1  # the reference's input: [B, 3, H, W] in -1..1
    with torch.no_grad():
        tokens = vision(image)  # [1, 257, 1280]
        uncond = vision(torch.zeros(1, 3, 224, 224))  # the reference's unconditional image
        vision.double()
        tokens64 = vision(image.double())
    meta["vision_fp32_vs_fp64"] = _spread(tokens, tokens64)
    every = slice(0, None, 16)
    tensors["vision_sub"], tensors["vision_sum"] = subsample(tokens, every), summary(tokens)
    tensors["vision_uncond_sub"], tensors["vision_uncond_sum"] = subsample(uncond, every), summary(uncond)
    del vision
    logger.info("vision done")

    resampler = Resampler(
        dim=1024, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1280, output_dim=1024, ff_mult=4
    ).eval()
    meta["resampler_shapes"] = json.dumps(_randomize(resampler, RESAMPLER_SEED))
    with torch.no_grad():
        out, out_uncond = resampler(tokens), resampler(uncond)  # [1, 16, 1024]
        meta["image_cond_fp32_vs_fp64"] = _spread(out, resampler.double()(tokens64))
    tensors["image_cond_sub"], tensors["image_cond_sum"] = subsample(out, slice(None)), summary(out)
    tensors["image_uncond_sub"], tensors["image_uncond_sum"] = subsample(out_uncond, slice(None)), summary(out_uncond)

    path = args.out / "encoders.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    logger.info("%s: %d bytes", path, path.stat().st_size)


if __name__ == "__main__":
    main()
