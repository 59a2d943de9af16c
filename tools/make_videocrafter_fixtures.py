"""Golden fixtures for the VideoCrafter library from the reference implementation.

Runs AILab-CVC/VideoCrafter's own ``lvdm`` code (U-Net, image resampler, LatentDiffusion's
schedule and its DDIMSampler) on tiny random configurations of every released variant and
writes the inputs and outputs to ``tests/fixtures/videocrafter/*.safetensors``. The tests build
our modules with the same tiny sizes, give them the same random weights (``randomize``, drawn
in sorted parameter-name order: identical names and shapes give identical weights) and compare.

Obtaining the reference (it is not vendored; nothing of it is committed)::

    git clone https://github.com/AILab-CVC/VideoCrafter /tmp/VideoCrafter
    git -C /tmp/VideoCrafter checkout 11bcd76fc62fb98b9715b994afe45b4fa081120c   # the commit used
    .venv/bin/python tools/make_videocrafter_fixtures.py --reference /tmp/VideoCrafter

The U-Net switches and the schedule come from the reference's ``configs/inference_*.yaml``
(the tool checks that our ``videocrafter.configs.VARIANTS`` agree); only sizes are shrunk.
Heavy imports the exercised code never uses are stubbed inside this tool: ``pytorch_lightning``
(``LightningModule`` = ``nn.Module`` with a ``device``), ``torchvision.utils.make_grid`` and
``cv2``. The VAE and text/image encoders are not run (``torch.nn.Identity`` stages); the
sampler's ``register_buffer`` (which moves every table to CUDA) is replaced by a plain setattr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from videocrafter.configs import VARIANTS, ResamplerConfig, ScheduleConfig, UNetConfig  # noqa: E402

logger = logging.getLogger("make_videocrafter_fixtures")

OUT = ROOT / "tests" / "fixtures" / "videocrafter"
REFERENCE_COMMIT = "11bcd76fc62fb98b9715b994afe45b4fa081120c"

# Tiny sizes: two levels (a Downsample and an Upsample), attention on both, 2 and 4 heads of 16,
# temporal_length 4 with 6 frames so the relative-position distances are clipped.
TINY_UNET = dict(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(1, 2),
    num_head_channels=16,
    context_dim=16,
    temporal_length=4,
)
TINY_RESAMPLER = ResamplerConfig(
    dim=32, depth=2, dim_head=8, heads=3, num_queries=4, embedding_dim=24, output_dim=16, ff_mult=4
)
SHAPE = (2, 4, 6, 4, 6)  # [B, C, T, h, w]
IMAGE_TOKENS = 10
CONFIG_FILES = {
    "t2v-1024-v1.0": "inference_t2v_1024_v1.0.yaml",
    "t2v-512-v1.0": "inference_t2v_512_v1.0.yaml",
    "i2v-512-v1.0": "inference_i2v_512_v1.0.yaml",
    "t2v-512-v2.0": "inference_t2v_512_v2.0.yaml",
}
SWITCHES = (
    "temporal_conv",
    "use_relative_position",
    "addition_attention",
    "use_image_attention",
    "fps_cond",
    "use_linear",
    "temporal_attention",
    "temporal_selfatt_only",
    "use_causal_attention",
)
SCHEDULE_KEYS = ("linear_start", "linear_end", "timesteps", "use_scale", "scale_b", "fix_scale_bug", "scale_factor")
# DDIM runs: (eta, steps, seed). 7 steps gives the reference's 8 uniform steps (1000 // 7 = 142).
DDIM_RUNS = ((0.0, 5, 77), (1.0, 7, 78))
CFG = 7.5


def tiny_unet_config(name: str) -> UNetConfig:
    return VARIANTS[name].unet.replace(**TINY_UNET)


def random_value(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """One parameter's random value: matrices and kernels ``randn / sqrt(fan_in)``; 1-D weights
    (norm gains) ``1 + 0.2 randn``; everything else (biases, scalars, 1-D embeddings) ``0.1 randn``."""
    draw = torch.randn(shape, generator=generator, dtype=torch.float32)
    if len(shape) >= 2:
        fan_in = 1
        for size in shape[1:]:
            fan_in *= size
        return draw / fan_in**0.5
    if name.endswith("weight"):
        return 1 + 0.2 * draw
    return 0.1 * draw


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int):
    """``(name, value)`` for every name in sorted order, drawn from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    for name in sorted(shapes):
        yield name, random_value(name, tuple(shapes[name]), gen)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Deterministic random values for every parameter (``random_tensors`` over the parameter names).

    Layers the reference zero-initialises get random values too; identical names and shapes give
    identical weights, in any implementation.
    """
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in random_tensors({k: tuple(v.shape) for k, v in params.items()}, seed):
            params[name].copy_(value)
    return module


def unet_key_list(module: torch.nn.Module) -> list[str]:
    """``name:shape`` of every state-dict entry, sorted (its hash is stored in the fixtures)."""
    return sorted(f"{k}:{list(v.shape)}" for k, v in module.state_dict().items())


def _inputs(name: str, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b = SHAPE[0]
    image = VARIANTS[name].image_to_video
    c = TINY_UNET["context_dim"]
    out = {
        "x": torch.randn(SHAPE, generator=gen),
        "t": torch.tensor([37, 901]),
        "fps": torch.tensor([8, 28]),
        "text": torch.randn(b, 77, c, generator=gen),
        "uncond_text": torch.randn(b, 77, c, generator=gen),
    }
    if image:
        out["image_tokens"] = torch.randn(b, IMAGE_TOKENS, TINY_RESAMPLER.embedding_dim, generator=gen)
        out["uncond_image_tokens"] = torch.randn(b, IMAGE_TOKENS, TINY_RESAMPLER.embedding_dim, generator=gen)
        out["unet_image_context"] = torch.randn(b, TINY_RESAMPLER.num_queries, c, generator=gen)
    return out


# ---------------------------------------------------------------- reference side


class _AttrDict(dict):
    """What OmegaConf gives the reference: a dict with attribute access."""

    def __getattr__(self, key):
        try:
            value = self[key]
        except KeyError as e:
            raise AttributeError(key) from e
        return _AttrDict(value) if isinstance(value, dict) else value


def _install_stubs() -> None:
    class LightningModule(torch.nn.Module):
        @property
        def device(self):
            return next(self.parameters()).device

    stubs = {
        "pytorch_lightning": types.ModuleType("pytorch_lightning"),
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.utils": types.ModuleType("torchvision.utils"),
        "cv2": types.ModuleType("cv2"),
    }
    stubs["pytorch_lightning"].LightningModule = LightningModule

    def make_grid(*args, **kwargs):
        raise NotImplementedError("stub: make_grid is not exercised")

    stubs["torchvision.utils"].make_grid = make_grid
    stubs["torchvision"].utils = stubs["torchvision.utils"]
    for key, module in stubs.items():
        sys.modules.setdefault(key, module)


def _reference_config(reference: Path, name: str) -> dict:
    import yaml

    with open(reference / "configs" / CONFIG_FILES[name]) as f:
        return yaml.safe_load(f)["model"]["params"]


def _check_variant(name: str, params: dict) -> ScheduleConfig:
    """Our variant's switches and schedule equal the reference YAML's (defaults as the reference)."""
    unet = params["unet_config"]["params"]
    ours = VARIANTS[name]
    reference_defaults = dict(
        use_relative_position=True,
        addition_attention=False,
        use_image_attention=False,
        fps_cond=False,
        temporal_conv=False,
        use_linear=False,
        temporal_attention=True,
        temporal_selfatt_only=True,
        use_causal_attention=False,
    )
    for key in SWITCHES:
        theirs = unet.get(key, reference_defaults[key])
        if getattr(ours.unet, key) != theirs:
            raise SystemExit(f"{name}: {key} is {getattr(ours.unet, key)} here, {theirs} in the reference config")
    defaults = dict(use_scale=False, scale_b=0.3, fix_scale_bug=False)
    for key in SCHEDULE_KEYS:
        theirs = params.get(key, defaults.get(key))
        if getattr(ours.schedule, key) != theirs:
            raise SystemExit(f"{name}: schedule {key} is {getattr(ours.schedule, key)} here, {theirs} upstream")
    return ours.schedule


def _reference_unet_params(params: dict) -> dict:
    unet = dict(params["unet_config"]["params"])
    unet.update(TINY_UNET)
    unet["use_checkpoint"] = False
    unet["channel_mult"] = list(unet["channel_mult"])
    unet["attention_resolutions"] = list(unet["attention_resolutions"])
    return unet


def _reference_model(params: dict, unet_params: dict):
    from lvdm.models.ddpm3d import LatentDiffusion

    identity = {"target": "torch.nn.Identity"}
    keep = {k: params[k] for k in ("linear_start", "linear_end", "timesteps", "scale_factor") if k in params}
    for key in ("use_scale", "scale_b", "fix_scale_bug"):
        if key in params:
            keep[key] = params[key]
    unet_config = _AttrDict(target="lvdm.modules.networks.openaimodel3d.UNetModel", params=unet_params)
    return LatentDiffusion(
        first_stage_config=identity,
        cond_stage_config=identity,
        unet_config=unet_config,
        conditioning_key="crossattn",
        use_ema=False,
        channels=4,
        image_size=list(SHAPE[3:]),
        uncond_type="empty_seq",
        **keep,
    ).eval()


def _sampler(model):
    from lvdm.models.samplers.ddim import DDIMSampler

    class CPUDDIMSampler(DDIMSampler):
        def register_buffer(self, name, attr):  # the reference moves every table to CUDA here
            setattr(self, name, attr)

    return CPUDDIMSampler(model)


def _run_variant(reference: Path, name: str, seed: int) -> tuple[dict, dict]:
    from lvdm.modules.encoders.ip_resampler import Resampler as RefResampler
    from lvdm.modules.networks.openaimodel3d import UNetModel

    params = _reference_config(reference, name)
    _check_variant(name, params)
    unet_params = _reference_unet_params(params)
    inputs = _inputs(name, seed)
    tensors = dict(inputs)

    unet = randomize(UNetModel(**unet_params), seed).eval()
    context = inputs["text"]
    if VARIANTS[name].image_to_video:
        context = torch.cat([context, inputs["unet_image_context"]], dim=1)
    with torch.no_grad():
        tensors["unet_out"] = unet(inputs["x"], inputs["t"], context=context, fps=inputs["fps"])

    cond, uncond = inputs["text"], inputs["uncond_text"]
    if VARIANTS[name].image_to_video:
        c = TINY_RESAMPLER
        resampler = RefResampler(
            dim=c.dim,
            depth=c.depth,
            dim_head=c.dim_head,
            heads=c.heads,
            num_queries=c.num_queries,
            embedding_dim=c.embedding_dim,
            output_dim=c.output_dim,
            ff_mult=c.ff_mult,
        )
        randomize(resampler, seed + 1).eval()
        with torch.no_grad():
            image = resampler(inputs["image_tokens"])
            uncond_image = resampler(inputs["uncond_image_tokens"])
        tensors["resampler_out"] = image
        tensors["uncond_resampler_out"] = uncond_image
        cond, uncond = torch.cat([cond, image], dim=1), torch.cat([uncond, uncond_image], dim=1)

    model = _reference_model(params, unet_params)
    model.model.diffusion_model.load_state_dict(unet.state_dict())
    tensors["alphas_cumprod"] = model.alphas_cumprod.clone()
    if model.use_scale:
        tensors["scale_arr"] = model.scale_arr[: model.num_timesteps].clone()
    for eta, steps, noise_seed in DDIM_RUNS:
        sampler = _sampler(model)
        torch.manual_seed(noise_seed)
        with torch.no_grad():
            samples, _ = sampler.sample(
                S=steps,
                batch_size=SHAPE[0],
                shape=SHAPE[1:],
                conditioning={"c_crossattn": [cond], "fps": inputs["fps"]},
                unconditional_guidance_scale=CFG,
                unconditional_conditioning={"c_crossattn": [uncond], "fps": inputs["fps"]},
                eta=eta,
                x_T=inputs["x"].clone(),
                verbose=False,
                temporal_length=SHAPE[2],
                clean_cond=True,
            )
        tensors[f"ddim_eta{eta:g}_out"] = samples
        tensors[f"ddim_eta{eta:g}_timesteps"] = torch.as_tensor(sampler.ddim_timesteps.copy())

    keys = unet_key_list(unet)
    meta = {
        "variant": name,
        "seed": str(seed),
        "cfg": str(CFG),
        "ddim_runs": json.dumps(DDIM_RUNS),
        "unet_params": json.dumps(unet_params, sort_keys=True),
        "unet_keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    }
    return tensors, meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of AILab-CVC/VideoCrafter")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from safetensors.torch import save_file

    reference = args.reference.resolve()
    if not (reference / "lvdm" / "modules" / "networks" / "openaimodel3d.py").is_file():
        raise SystemExit(f"{reference} is not a VideoCrafter checkout (no lvdm/modules/networks/openaimodel3d.py)")
    commit = REFERENCE_COMMIT
    if (reference / ".git").exists():
        commit = subprocess.run(
            ["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    _install_stubs()
    sys.path.insert(0, str(reference))
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(CONFIG_FILES):
        tensors, meta = _run_variant(reference, name, seed=100 + index)
        meta["reference_commit"] = commit
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        path = args.out / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        logger.info("%s: %d tensors, %d bytes", path.name, len(tensors), path.stat().st_size)


if __name__ == "__main__":
    main()
