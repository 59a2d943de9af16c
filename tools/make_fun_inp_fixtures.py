"""Golden outputs of the reference CogVideoX-Fun inpaint pipeline on a tiny random model.

diffusers has no CogVideoX-Fun InP pipeline, so the oracle is VideoX-Fun's own
``CogVideoXFunInpaintPipeline`` (``videox_fun/pipeline/pipeline_cogvideox_fun_inpaint.py``), its
Fun transformer (``videox_fun/models/cogvideox_transformer3d.py``) and its input helper
(``videox_fun/utils/utils.py: get_image_to_video_latent``). They are read from a checkout that
this script does not ship; get one with

    git clone https://github.com/aigc-apps/VideoX-Fun /tmp/vxf
    git -C /tmp/vxf checkout 804a425      # the commit the committed fixtures were made from

then run

    .venv/bin/python tools/make_fun_inp_fixtures.py --videox-fun /tmp/vxf

It writes ``tests/fixtures/fun_inp/fun_inp_reference.safetensors``: the tiny transformer's and
VAE's random weights (prefixes ``transformer.`` / ``vae.``), and per case (start-only,
start+end, masked video with the reference's noise augmentation, no input = text-to-video) the
inputs (8-bit pixels, 0/255 masks (255 = unknown), noise, embeddings) and the reference's final latents
(scaled, ``[B, F, C, h, w]``). Configs and cases are in the file's JSON metadata.
``tests/core/test_fun_inpaint.py`` checks the library against it.

Stand-ins (the reference's optional accelerators, not its maths): VideoX-Fun's
``attention_utils.attention`` dispatches to flash/sage attention and imports triton; here it is
``F.scaled_dot_product_attention`` on the same ``[B, L, H, D]`` layout. Its multi-GPU helpers
(``videox_fun.dist``) are stubs for a world size of 1 (the single-GPU path). ``cv2``, ``imageio``
and ``torchvision`` are empty modules (``utils.py`` imports them; the helper used does not).
The reference's VAE import is diffusers' ``AutoencoderKLCogVideoX`` (VideoX-Fun's own VAE file is
a copy of it).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import logging
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core"))

from conftest import TINY_TRANSFORMER_CONFIGS, randomize_module  # noqa: E402

log = logging.getLogger("make_fun_inp_fixtures")

OUT = ROOT / "tests" / "fixtures" / "fun_inp" / "fun_inp_reference.safetensors"
PKG = "videox_fun_reference"
T, H, W = 3, 8, 12  # latent frames / height / width
FRAMES, PH, PW = 9, H * 4, W * 4  # pixel frames / height / width (the tiny VAE: 4x space, 4x time)
STEPS, CFG, SEED = 5, 6.0, 123
VAE_KW = dict(
    block_out_channels=(8, 8, 16),
    down_block_types=("CogVideoXDownBlock3D",) * 3,
    up_block_types=("CogVideoXUpBlock3D",) * 3,
    layers_per_block=1,
    norm_num_groups=4,
)


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # importable as a package
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
    return mod


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, causal=False, **_):
    """[B, L, H, D] attention, what the reference's dispatcher computes without flash/sage kernels."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=causal,
    )
    return out.transpose(1, 2)


def load_reference(checkout: Path):
    """The reference transformer class, pipeline class and get_image_to_video_latent."""
    src = checkout / "videox_fun"
    for need in ("models/cogvideox_transformer3d.py", "pipeline/pipeline_cogvideox_fun_inpaint.py", "utils/utils.py"):
        if not (src / need).exists():
            raise SystemExit(f"{src / need} not found: pass --videox-fun <a VideoX-Fun checkout>")
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5EncoderModel, T5Tokenizer

    class _NoMultiGPU:
        def __init__(self, *a, **k):
            raise RuntimeError("multi-GPU attention is not used here")

    _module(PKG)
    _module(
        f"{PKG}.dist",
        get_sequence_parallel_rank=lambda: 0,
        get_sequence_parallel_world_size=lambda: 1,
        get_sp_group=lambda: None,
        xFuserLongContextAttention=_NoMultiGPU,
    )
    _module(f"{PKG}.dist.cogvideox_xfuser", CogVideoXMultiGPUsAttnProcessor2_0=_NoMultiGPU)
    models = _module(f"{PKG}.models", AutoencoderKLCogVideoX=AutoencoderKLCogVideoX)
    models.T5EncoderModel, models.T5Tokenizer = T5EncoderModel, T5Tokenizer
    _module(f"{PKG}.models.attention_utils", attention=_sdpa)
    tmod = _load(f"{PKG}.models.cogvideox_transformer3d", src / "models" / "cogvideox_transformer3d.py")
    models.CogVideoXTransformer3DModel = tmod.CogVideoXTransformer3DModel
    _module(f"{PKG}.pipeline")
    pmod = _load(
        f"{PKG}.pipeline.pipeline_cogvideox_fun_inpaint", src / "pipeline" / "pipeline_cogvideox_fun_inpaint.py"
    )
    for name in ("cv2", "imageio", "torchvision"):
        sys.modules.setdefault(name, types.ModuleType(name))
    _module(f"{PKG}.utils")
    umod = _load(f"{PKG}.utils.utils", src / "utils" / "utils.py")
    return tmod.CogVideoXTransformer3DModel, pmod.CogVideoXFunInpaintPipeline, umod.get_image_to_video_latent


def _half_exact(module: torch.nn.Module) -> torch.nn.Module:
    """Round the weights to float16 values (still run in float32) so the file can store them in half."""
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return module


def _image(seed: int):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (PH, PW, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videox-fun", type=Path, required=True, help="a VideoX-Fun checkout (see above)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler

    transformer_cls, pipeline_cls, get_image_to_video_latent = load_reference(args.videox_fun)
    cfg = TINY_TRANSFORMER_CONFIGS["fun-5b-inp"]
    accepted = inspect.signature(transformer_cls.__init__).parameters
    reference_kw = {k: v for k, v in cfg.to_dict().items() if k in accepted}
    dropped = {k: v for k, v in cfg.to_dict().items() if k not in accepted}
    assert dropped == {"ofs_embed_dim": None}, dropped  # the Fun class has no ofs embedding
    transformer = transformer_cls(**reference_kw, add_noise_in_inpaint_model=True).eval()
    _half_exact(randomize_module(transformer, seed=41))
    vae = _half_exact(randomize_module(AutoencoderKLCogVideoX(**VAE_KW, scaling_factor=0.7).eval(), seed=42, std=0.05))
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=1.0,
        clip_sample=False,
    )
    pipe = pipeline_cls(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)

    g = torch.Generator().manual_seed(7)
    pos = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    neg = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    noise = torch.randn(1, T, 16, H, W, generator=g)  # [B, F, C, h, w], the reference's layout

    masked_video = torch.randint(0, 256, (1, 3, FRAMES, PH, PW), generator=g) / 255  # 0..1, 8-bit values
    box = torch.zeros(1, 1, FRAMES, PH, PW)
    box[:, :, 2:, 8:24, 10:34] = 255  # unknown: a box from pixel frame 2 on
    cases = {
        "start": get_image_to_video_latent([_image(1)], None, FRAMES, (PH, PW))[:2],
        "start_end": get_image_to_video_latent([_image(1)], [_image(2)], FRAMES, (PH, PW))[:2],
        "masked_video": (masked_video, box),
        "text_to_video": get_image_to_video_latent(None, None, FRAMES, (PH, PW))[:2],
    }
    tensors = {f"transformer.{k}": v.half().contiguous() for k, v in transformer.state_dict().items()}
    tensors.update({f"vae.{k}": v.half().contiguous() for k, v in vae.state_dict().items()})
    tensors.update(pos=pos, neg=neg, noise=noise)
    meta_cases = {}
    for name, (video, mask) in cases.items():
        aug = 0.0563 if name == "masked_video" else 0.0
        torch.manual_seed(SEED)  # the reference draws its pixel noise from the global generator
        out = pipe(
            height=PH,
            width=PW,
            video=video,
            mask_video=mask,
            num_frames=FRAMES,
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED),
            latents=noise.clone(),
            prompt_embeds=pos,
            negative_prompt_embeds=neg,
            output_type="latent",
            return_dict=False,
            noise_aug_strength=aug,
        )
        assert out.shape == (1, T, 16, H, W), out.shape
        tensors[f"{name}.video"] = (video * 255).round().to(torch.uint8).contiguous()  # exact: 8-bit inputs
        tensors[f"{name}.mask"] = mask.to(torch.uint8).contiguous()  # 0 known, 255 unknown
        tensors[f"{name}.expected"] = out.float().contiguous()
        meta_cases[name] = {"noise_aug_strength": aug, "noise_seed": SEED}
        log.info("%s: |latents| max %.3f", name, float(out.abs().max()))
    meta = {
        "transformer": json.dumps(cfg.to_dict()),
        "vae": json.dumps(
            {k: list(v) if isinstance(v, tuple) else v for k, v in VAE_KW.items()} | {"scaling_factor": 0.7}
        ),
        "run": json.dumps({"steps": STEPS, "cfg": CFG, "scheduler": "CogVideoXDDIMScheduler", "snr_shift_scale": 1.0}),
        "cases": json.dumps(meta_cases),
        "source": "aigc-apps/VideoX-Fun 804a425: CogVideoXFunInpaintPipeline, get_image_to_video_latent",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    log.info("wrote %s (%d tensors, %.0f kB)", args.out, len(tensors), args.out.stat().st_size / 1024)


if __name__ == "__main__":
    main()
