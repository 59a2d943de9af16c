"""CogVideoX as a core MODEL (nodes/core_model.py) inside the real ComfyUI, in this process.

- ``model_sampling`` has the reference schedule's noise levels (``cogvideox.schedules``);
- ``apply_model`` (core's denoised ``x0``) equals the library's x0 prediction on tiny random
  configs of every variant, image-to-video and the 1.5 frame padding included;
- core KSampler on the shipped tiny model matches the pack's own solvers with the same noise;
- core ``LoraLoaderModelOnly`` patches the network through ``diffusion_model.``-prefixed keys.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from harness.comfy_inprocess import load_pack

pytestmark = pytest.mark.host

STEPS = 10  # divides 1000: core's "simple" timesteps are then the reference's trailing ones
CFG = 6.0
PROMPT = "a red square moving right"


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def lib(pack):
    """The pack's own copy of the library (the one its nodes use)."""
    from cogvideox_pack.cogvideox import conditioning, configs, pipeline, schedules, synthetic, transformer

    return types.SimpleNamespace(
        conditioning=conditioning,
        configs=configs,
        pipeline=pipeline,
        schedules=schedules,
        synthetic=synthetic,
        transformer=transformer,
    )


def _tiny_core_model(pack, lib, name: str):
    from cogvideox_pack.nodes.core_model import CogVideoXCoreModel
    from core.conftest import TINY_TRANSFORMER_CONFIGS, randomize_module

    cfg = TINY_TRANSFORMER_CONFIGS[name]
    variant = dataclasses.replace(lib.configs.VARIANTS[name], transformer=cfg)
    net = randomize_module(lib.transformer.CogVideoXTransformer(cfg).eval(), seed=3)
    return CogVideoXCoreModel(net, variant), net, variant


@pytest.mark.parametrize("name", ["2b", "5b", "5b-i2v", "1.5-5b", "1.5-5b-i2v"])
def test_model_sampling_has_the_reference_noise_levels(pack, lib, name):
    model, _, variant = _tiny_core_model(pack, lib, name)
    reference = lib.schedules.to_sigmas(lib.schedules.alphas_cumprod(variant.scheduler_config()))  # [1000] float64
    sigmas = model.model_sampling.sigmas.double()
    assert sigmas.shape == reference.shape
    rel = ((sigmas[:-1] - reference[:-1]) / reference[:-1]).abs().max().item()
    assert rel < 1e-6, f"{name}: sigmas differ from the reference by {rel:.2e} relative"
    # The zero-SNR end (sigma = inf in the reference) is finite, as core's own zero-SNR models have it.
    assert torch.isinf(reference[-1]) and 4000 < sigmas[-1].item() < 5000
    # Every reference timestep maps back to itself (core's sigma -> timestep lookup).
    t = torch.arange(0, 1000, 37)
    assert torch.equal(model.model_sampling.timestep(model.model_sampling.sigmas[t]), t)
    shift = 3.0 if name == "2b" else 1.0
    assert variant.snr_shift_scale == shift


@pytest.mark.parametrize("name", ["2b", "5b", "5b-i2v", "1.5-5b", "1.5-5b-i2v"])
def test_core_denoised_equals_the_library_x0(pack, lib, name):
    """BaseModel.apply_model (core's calculate_input / calculate_denoised around our network)
    against the pack's reference Denoiser on the same VP-space input, within 1e-5."""
    model, net, variant = _tiny_core_model(pack, lib, name)
    frames = 3  # 1.5: odd, so the model pads one frame (patch_size_t 2)
    g = torch.Generator().manual_seed(0)
    x_vp = torch.randn(2, 16, frames, 8, 12, generator=g)
    context = torch.randn(2, 7, 16, generator=g)
    image = torch.randn(2, 16, 1, 8, 12, generator=g) if variant.is_i2v else None
    kwargs = {}
    if image is not None:
        conds = model.extra_conds(noise=x_vp, device=torch.device("cpu"), cross_attn=context, concat_latent_image=image)
        kwargs["c_concat"] = conds["c_concat"].cond
    pad = (-frames) % (variant.transformer.patch_size_t or 1)
    image_cond = None
    if image is not None:
        scaled = lib.pipeline.scale_image_latent(image, variant, "diffusers")
        image_cond = lib.conditioning.i2v_condition(scaled, frames + pad)
    table = lib.schedules.alphas_cumprod(variant.scheduler_config())
    for t in (0, 250, 600, 998):
        schedule = lib.schedules.Schedule(torch.tensor([t]), torch.tensor([t - 1]), table)
        denoiser = lib.pipeline.Denoiser(
            net, schedule, context, None, cfg=1.0, image_cond=image_cond, ofs=2.0 if variant.ofs else None
        )
        sigma = model.model_sampling.sigmas[t].expand(2)
        x_ve = x_vp * (1 + sigma.view(-1, 1, 1, 1, 1) ** 2).sqrt()
        with torch.no_grad():
            got = model.apply_model(x_ve, sigma, c_crossattn=context, **kwargs)
            want = denoiser(lib.pipeline.pad_front(x_vp, pad), 0)[:, :, pad:]
        err = (got - want).abs().max().item()
        assert err < 1e-5, f"{name} t={t}: core x0 differs from the library's by {err:.2e}"
    # A change the model must see: the image latent (I2V) or the text (T2V).
    with torch.no_grad():
        sigma = model.model_sampling.sigmas[500].expand(2)
        base = model.apply_model(x_vp, sigma, c_crossattn=context, **kwargs)
        other = model.apply_model(x_vp, sigma, c_crossattn=context.flip(0), **kwargs)
    assert (base - other).abs().max() > 1e-3


def test_an_image_to_video_model_without_an_image_says_so(pack, lib):
    model, _, _ = _tiny_core_model(pack, lib, "5b-i2v")
    with pytest.raises(ValueError, match="image-to-video .*CogVideoX Image To Video"):
        noise, context = torch.zeros(1, 16, 3, 8, 12), torch.zeros(1, 7, 16)
        model.extra_conds(noise=noise, device=torch.device("cpu"), cross_attn=context)


def test_an_image_latent_of_another_model_is_refused_by_name(pack, lib):
    model, _, _ = _tiny_core_model(pack, lib, "5b")
    with pytest.raises(ValueError, match="CogVideoX MODEL .*latent has shape \\(1, 4, 8, 12\\)"):
        model.apply_model(torch.zeros(1, 4, 8, 12), torch.ones(1), c_crossattn=torch.zeros(1, 7, 16))


# ----------------------------------------------------------------- the shipped tiny model, via nodes
@pytest.fixture(scope="module")
def tiny(pack):
    from cogvideox_pack.nodes.loaders import CogVideoXModelLoader, CogVideoXT5Loader, CogVideoXVAELoader
    from cogvideox_pack.nodes.text import CogVideoXTextEncode

    clip = CogVideoXT5Loader.execute("cogvideox_tiny_t5.safetensors", "auto")[0]
    encode = CogVideoXTextEncode
    return {
        "clip": clip,
        "t2v": CogVideoXModelLoader.execute("cogvideox_tiny_t2v.safetensors", "fp32"),
        "i2v": CogVideoXModelLoader.execute("cogvideox_tiny_i2v.safetensors", "fp32"),
        "vae": CogVideoXVAELoader.execute("cogvideox_tiny_vae.safetensors", "fp32")[0],
        "positive": encode.execute(clip, PROMPT)[0],
        "negative": encode.execute(clip, "")[0],
    }


def _decode(pack, vae, latent: torch.Tensor) -> torch.Tensor:
    from cogvideox_pack.nodes.vae import CogVideoXVAEDecode

    images = CogVideoXVAEDecode.execute(vae, {"samples": latent}, "off", 256)[0]  # [F, H, W, 3] in 0..1
    return images.permute(3, 0, 1, 2) * 2 - 1  # [3, F, H, W]


def _core_ksampler(model, positive, negative, latent, sampler, scheduler, seed=0, steps=STEPS):
    import nodes as comfy_nodes

    return comfy_nodes.KSampler().sample(
        model, seed, steps, CFG, sampler, scheduler, positive, negative, {"samples": latent}, denoise=1.0
    )[0]["samples"]


@pytest.mark.parametrize(("core_sampler", "pack_sampler"), [("ddim", "ddim"), ("euler", "euler")])
def test_core_ksampler_matches_the_pack_sampler_on_the_tiny_model(pack, lib, tiny, core_sampler, pack_sampler):
    """Core ``ddim`` is Euler in sigma space (k-diffusion), which is deterministic DDIM in VP
    space; with core's ``simple`` scheduler at a step count dividing 1000 the timesteps are the
    reference's trailing ones. Same noise (core's prepare_noise, handed to the pack's sampler)."""
    import comfy.sample
    from cogvideox_pack.nodes.common import network

    pack_model, _, core_model = tiny["t2v"]
    latent = torch.zeros(1, 16, 3, 16, 16)
    core = _core_ksampler(core_model, tiny["positive"], tiny["negative"], latent, core_sampler, "simple")
    noise = comfy.sample.prepare_noise(latent, 0)
    ref = lib.pipeline.sample(
        network(pack_model.patcher), pack_model.variant, latent, tiny["positive"][0][0], tiny["negative"][0][0],
        steps=STEPS, cfg=CFG, sampler=pack_sampler, noise=noise,
    )
    psnr = lib.synthetic.psnr(_decode(pack, tiny["vae"], core), _decode(pack, tiny["vae"], ref))
    latent_err = (core - ref).abs().max().item()
    what = f"core {core_sampler}+simple vs pack {pack_sampler}: {psnr:.1f} dB (latent max {latent_err:.2e})"
    assert psnr >= 40.0, what
    # and the check can fail: another seed's noise is far away
    other = _core_ksampler(core_model, tiny["positive"], tiny["negative"], latent, core_sampler, "simple", seed=1)
    assert lib.synthetic.psnr(_decode(pack, tiny["vae"], other), _decode(pack, tiny["vae"], ref)) < 30.0


def test_core_ksampler_runs_image_to_video_from_the_pack_image_node(pack, lib, tiny):
    """CogVideoX Image To Video sets concat_latent_image: core KSampler (euler) on the core MODEL
    and the pack's euler agree with the same noise."""
    import comfy.sample
    from cogvideox_pack.nodes.common import network
    from cogvideox_pack.nodes.latents import CogVideoXImageToVideo

    pack_model, _, core_model = tiny["i2v"]
    image = lib.synthetic.render("red", "square", torch.tensor([(36.0, 48.0)]), object_size=54.0, size=128)
    image = ((image + 1) / 2).permute(1, 2, 3, 0)  # [1, H, W, 3] in 0..1
    positive, negative, latent = CogVideoXImageToVideo.execute(
        tiny["positive"], tiny["negative"], tiny["vae"], image, 128, 128, 9, 1, "crop", 0.0, "fixed", "diffusers", 0
    )
    assert torch.equal(positive[0][1]["concat_latent_image"], positive[0][1]["cogvideox_image_latent"])
    samples = latent["samples"]
    core = _core_ksampler(core_model, positive, negative, samples, "euler", "simple")
    ref = lib.pipeline.sample(
        network(pack_model.patcher), pack_model.variant, samples, positive[0][0], negative[0][0],
        steps=STEPS, cfg=CFG, sampler="euler", noise=comfy.sample.prepare_noise(samples, 0),
        image_latent=positive[0][1]["cogvideox_image_latent"],
    )
    psnr = lib.synthetic.psnr(_decode(pack, tiny["vae"], core), _decode(pack, tiny["vae"], ref))
    assert psnr >= 40.0, f"image-to-video, core euler vs pack euler: {psnr:.1f} dB"


def test_core_lora_loader_patches_the_network(pack, tiny, tmp_path):
    """A LoRA in ``diffusion_model.``-prefixed keys, loaded by core LoraLoaderModelOnly: it changes
    the output; strength 0 gives the original bit for bit."""
    import folder_paths
    from safetensors.torch import save_file

    import nodes as comfy_nodes

    _, _, core_model = tiny["t2v"]
    g = torch.Generator().manual_seed(7)
    lora = {}
    for key, weight in core_model.model.diffusion_model.named_parameters():
        if key.endswith(("attn1.to_q.weight", "attn1.to_v.weight", "ff.net.0.proj.weight")):
            stem = f"diffusion_model.{key[: -len('.weight')]}"
            lora[f"{stem}.lora_up.weight"] = torch.randn(weight.shape[0], 4, generator=g) * 0.2
            lora[f"{stem}.lora_down.weight"] = torch.randn(4, weight.shape[1], generator=g) * 0.2
    assert len(lora) == 2 * 3 * 4  # 3 layers in each of the 4 blocks
    save_file(lora, str(tmp_path / "cogvideox_test_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path))
    latent = torch.zeros(1, 16, 3, 16, 16)

    def run(model):
        return _core_ksampler(model, tiny["positive"], tiny["negative"], latent, "euler", "simple", steps=4)

    base = run(core_model)
    loader = comfy_nodes.LoraLoaderModelOnly()
    patched = loader.load_lora_model_only(core_model, "cogvideox_test_lora.safetensors", 1.0)[0]
    assert len(patched.patches) == 12, sorted(patched.patches)[:3]
    changed = run(patched)
    zero = run(loader.load_lora_model_only(core_model, "cogvideox_test_lora.safetensors", 0.0)[0])
    again = run(core_model)  # the patches came off again
    assert (changed - base).abs().max() > 1e-2
    assert torch.equal(zero, base)
    assert torch.equal(again, base)


# ------------------------------------------------------------------ long video: core context windows
def _windows(model, length: int, dim: int = 2, overlap: int = 1):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    node = ContextWindowsManualNode
    return node.execute(model, length, overlap, "standard_static", 1, False, "pyramid", dim).result[0]


LONG_CASES = [("red", "square", "right"), ("blue", "circle", "left")]


def test_context_windows_run_three_times_the_trained_length(pack, lib, tiny):
    """The tiny model has learned positions for 3 latent frames (9 frames); 9 latent frames (33
    frames) run in windows of 3 on the frame axis and keep the captioned colour and direction over
    the whole video. Without windows the sampler says what to do."""
    from cogvideox_pack.nodes.text import CogVideoXTextEncode

    _, _, core_model = tiny["t2v"]
    latent = torch.zeros(1, 16, 9, 16, 16)
    with pytest.raises(ValueError, match="KSampler .*learned positions for at most 3 .*ContextWindowsManual"):
        _core_ksampler(core_model, tiny["positive"], tiny["negative"], latent, "euler", "simple", steps=1)
    windowed = _windows(core_model, 3)
    clip = tiny["clip"]
    seen = []
    for colour, shape, direction in LONG_CASES:
        positive = CogVideoXTextEncode.execute(clip, lib.synthetic.caption_for(colour, shape, direction))[0]
        out = _core_ksampler(windowed, positive, tiny["negative"], latent, "euler", "simple")
        video = _decode(pack, tiny["vae"], out)  # [3, 33, 128, 128]
        assert video.shape[1] == 33
        seen.append((lib.synthetic.video_colour(video), lib.synthetic.motion_direction(video)))
    assert [s[0] for s in seen] == [c[0] for c in LONG_CASES], seen
    assert [s[1] for s in seen] == [c[2] for c in LONG_CASES], seen


def test_context_windows_longer_than_the_video_or_on_another_axis_are_refused(pack, tiny):
    _, _, core_model = tiny["t2v"]
    latent = torch.zeros(1, 16, 3, 16, 16)
    with pytest.raises(ValueError, match="ContextWindowsManual .*context_length 5 is longer than the video"):
        _core_ksampler(_windows(core_model, 5), tiny["positive"], tiny["negative"], latent, "euler", "simple")
    with pytest.raises(ValueError, match="ContextWindowsManual .*dim is 0.*Set dim to 2"):
        _core_ksampler(_windows(core_model, 2, dim=0), tiny["positive"], tiny["negative"], latent, "euler", "simple")


def test_unet_block_patches_are_refused_by_name(pack, tiny):
    """Perturbed-Attention Guidance replaces a UNet middle-block attention, which CogVideoX has
    not: an error instead of a silent no-op."""
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance

    _, _, core_model = tiny["t2v"]
    patched = PerturbedAttentionGuidance.execute(core_model, 3.0).result[0]
    with pytest.raises(ValueError, match="core patch node .*patches_replace:attn1.*Perturbed-Attention"):
        _core_ksampler(patched, tiny["positive"], tiny["negative"], torch.zeros(1, 16, 3, 16, 16), "euler", "simple",
                       steps=1)


@pytest.mark.parametrize("name", ["fun-2b-inp", "fun-5b-control", "fun-1.5-5b-inp"])
def test_core_denoised_equals_the_library_x0_for_fun_models(pack, lib, name):
    """Fun InP / Control on the core path: the conditioning keys of CogVideoX Fun Inpaint /
    Control Conditioning (``concat_latent_image`` raw, ``concat_mask`` 1 = generate) give the same
    x0 as the pack's sampler's Fun channels (``pipeline._fun_cond``), within 1e-5."""
    model, net, variant = _tiny_core_model(pack, lib, name)
    frames = 3
    g = torch.Generator().manual_seed(1)
    x_vp = torch.randn(2, 16, frames, 8, 12, generator=g)
    context = torch.randn(2, 7, 16, generator=g)
    latent = torch.randn(2, 16, frames, 8, 12, generator=g)
    mask = (torch.rand(2, 1, frames, 8, 12, generator=g) > 0.5).float() if variant.fun == "inpaint" else None
    keys = {"concat_latent_image": latent, "cogvideox_fun": variant.fun}
    if mask is not None:
        keys["concat_mask"] = mask
    conds = model.extra_conds(noise=x_vp, device=torch.device("cpu"), cross_attn=context, **keys)
    pad = (-frames) % (variant.transformer.patch_size_t or 1)
    fun_cond = lib.pipeline._fun_cond(variant, latent, mask, x_vp.shape, torch.device("cpu"), pad)
    table = lib.schedules.alphas_cumprod(variant.scheduler_config())
    for t in (0, 400, 998):
        schedule = lib.schedules.Schedule(torch.tensor([t]), torch.tensor([t - 1]), table)
        denoiser = lib.pipeline.Denoiser(net, schedule, context, None, cfg=1.0, image_cond=fun_cond)
        sigma = model.model_sampling.sigmas[t].expand(2)
        x_ve = x_vp * (1 + sigma.view(-1, 1, 1, 1, 1) ** 2).sqrt()
        with torch.no_grad():
            got = model.apply_model(x_ve, sigma, c_crossattn=context, c_concat=conds["c_concat"].cond)
            want = denoiser(lib.pipeline.pad_front(x_vp, pad), 0)[:, :, pad:]
        err = (got - want).abs().max().item()
        assert err < 1e-5, f"{name} t={t}: core x0 differs from the pack's Fun path by {err:.2e}"
    with pytest.raises(ValueError, match="CogVideoX Fun .* Conditioning"):
        model.extra_conds(noise=x_vp, device=torch.device("cpu"), cross_attn=context, concat_latent_image=latent)


def test_core_cfg_and_unet_nodes_on_the_core_model(pack, tiny):
    """RenormCFG (reads ``diffusion_model.in_channels``) runs and changes the result; FreeU_V2 (reads
    the UNet's ``model_channels``) stops with a message naming it instead of a bare KeyError."""
    from comfy_extras.nodes_freelunch import FreeU_V2
    from comfy_extras.nodes_lumina2 import RenormCFG

    _, _, core_model = tiny["t2v"]
    latent = torch.zeros(1, 16, 3, 16, 16)
    base = _core_ksampler(core_model, tiny["positive"], tiny["negative"], latent, "euler", "simple", steps=3)
    renormed = RenormCFG.execute(core_model, 100.0, 0.5).result[0]
    out = _core_ksampler(renormed, tiny["positive"], tiny["negative"], latent, "euler", "simple", steps=3)
    assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-3
    with pytest.raises(KeyError, match="FreeU .*'model_channels'.*not a UNet"):
        FreeU_V2().patch(core_model, 1.3, 1.4, 0.9, 0.2)
