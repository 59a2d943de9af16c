"""VideoCrafter as core ComfyUI types, measured against the reference fixtures (run inside the
ComfyUI tree, not by pytest): prints one JSON line of measurements and error messages.

Usage: ``cd build/comfyui && python <this file> <pack dir>``. The pack is imported the way
ComfyUI imports custom nodes; the tiny U-Nets get the fixtures' random weights
(tools/make_videocrafter_fixtures.py) and are loaded through the pack's checkpoint code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile


def _load_pack(pack_dir: str):
    init = os.path.join(pack_dir, "__init__.py")
    spec = importlib.util.spec_from_file_location("vc_probe_pack", init, submodule_search_locations=[pack_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _error(fn) -> str:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the message is the measurement
        return f"{type(e).__name__}: {e}"
    return ""


def main(pack_dir: str) -> int:
    sys.path.insert(0, os.getcwd())
    import comfy.options

    sys.argv = ["main.py", "--cpu"]
    comfy.options.enable_args_parsing()
    _load_pack(pack_dir)
    sys.path.insert(0, pack_dir)  # the tools (and their standalone library imports)

    import comfy.sample
    import comfy.samplers
    import folder_paths
    import torch
    from einops import rearrange
    from safetensors.torch import load_file, save_file
    from vc_probe_pack.nodes import videocrafter as nodes
    from vc_probe_pack.nodes import videocrafter_loading as loading
    from vc_probe_pack.videocrafter.resampler import Resampler
    from vc_probe_pack.videocrafter.unet import VideoCrafterUNet

    from tools import make_videocrafter_fixtures as fx

    torch.set_num_threads(1)
    fixtures = os.path.join(pack_dir, "tests", "fixtures", "videocrafter")
    report: dict = {}
    patchers = {}
    for name in ("t2v-1024-v1.0", "i2v-512-v1.0", "t2v-512-v1.0"):
        path = os.path.join(fixtures, f"{name}.safetensors")
        t = load_file(path)
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata()
        seed = int(meta["seed"])
        unet = fx.randomize(VideoCrafterUNet(fx.tiny_unet_config(name)), seed)
        sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
        image = name.startswith("i2v")
        if image:
            resampler = fx.randomize(Resampler(fx.TINY_RESAMPLER), seed + 1)
            sd.update({f"image_proj_model.{k}": v for k, v in resampler.state_dict().items()})
        patcher = loading.load_model("probe", dict(sd), dtype=torch.float32, resampler=fx.TINY_RESAMPLER)
        patchers[name] = (patcher, sd)
        base = patcher.model
        ms = base.model_sampling
        frames = t["x"].shape[2]

        # (a) one evaluation through core's apply_model (model_sampling + frames-as-batch wrapper)
        sigma = ms.sigmas[t["t"]]  # [2]
        factor = ms._input_factor(sigma)  # sqrt(abar) * s
        x_ve = t["x"] / factor.view(-1, 1, 1, 1, 1)
        context = t["text"]
        if image:
            context = torch.cat([context, t["unet_image_context"]], dim=1)
        xb = rearrange(x_ve, "b c t h w -> (b t) c h w")
        sigma_b = sigma.repeat_interleave(frames)
        with torch.no_grad():
            denoised = base.apply_model(
                xb,
                sigma_b,
                c_crossattn=context.repeat_interleave(frames, dim=0),
                num_video_frames=frames,
                fps=t["fps"].repeat_interleave(frames),
            )
        eps = (xb - denoised) / sigma_b.view(-1, 1, 1, 1)
        expected = rearrange(t["unet_out"], "b c t h w -> (b t) c h w")
        report[f"{name}/apply_model_eps_err"] = (eps - expected).abs().max().item()

        # (b) core sampling with the reference's sigmas (ending at abar_0, not 0): euler = DDIM eta 0
        _, steps, _ = fx.DDIM_RUNS[0]
        ts = torch.arange(0, 1000, 1000 // steps) + 1
        sigmas = torch.cat([ms.sigmas[ts.flip(0)], ms.sigmas[:1]])
        cond, uncond = t["text"][:1], t["uncond_text"][:1]
        if image:
            cond = torch.cat([cond, t["resampler_out"][:1]], dim=1)
            uncond = torch.cat([uncond, t["uncond_resampler_out"][:1]], dim=1)
        fps = int(t["fps"][0])
        positive, negative = [[cond, {"fps": fps}]], [[uncond, {"fps": fps}]]
        x_t = rearrange(t["x"][:1], "1 c t h w -> t c h w")
        noise = x_t / (ms._input_factor(sigmas[:1]) * sigmas[0])  # core scales noise by sigma_0
        latent = torch.zeros_like(x_t)
        out = comfy.sample.sample_custom(
            patcher,
            noise,
            fx.CFG,
            comfy.samplers.ksampler("euler"),
            sigmas,
            positive,
            negative,
            latent,
            disable_pbar=True,
            seed=0,
        )
        final = base.process_latent_in(out) * ms._input_factor(sigmas[-1:])  # back to the reference's x
        reference = rearrange(t["ddim_eta0_out"][:1], "1 c t h w -> t c h w")
        report[f"{name}/core_euler_vs_reference_ddim_eta0_err"] = (final - reference).abs().max().item()
        report[f"{name}/reference_ddim_eta0_peak"] = reference.abs().max().item()
        # KSampler's own ddim_uniform schedule ends at sigma 0 (fully denoised): how far from the reference
        zero_end = torch.cat([sigmas[:-1], sigmas.new_zeros(1)])
        out0 = comfy.sample.sample_custom(
            patcher,
            noise,
            fx.CFG,
            comfy.samplers.ksampler("euler"),
            zero_end,
            positive,
            negative,
            latent,
            disable_pbar=True,
            seed=0,
        )
        report[f"{name}/core_sigma0_end_vs_reference_err"] = (
            (base.process_latent_in(out0) - reference).abs().max().item()
        )
        scheduler = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", steps)
        report[f"{name}/ddim_uniform_matches_reference_steps"] = bool(torch.allclose(scheduler[:-1], sigmas[:-1]))

    # (c) the pack's own sampler node: shape, raw VAE space, fps from the conditioning
    patcher, _ = patchers["t2v-1024-v1.0"]
    t = load_file(os.path.join(fixtures, "t2v-1024-v1.0.safetensors"))
    latent = {"samples": torch.zeros(6, 4, 4, 6)}  # VideoCrafter Empty Latent's layout, below its 64 px minimum
    positive = nodes.VideoCrafterFPS.execute([[t["text"][:1], {}]], 8)[0]
    negative = [[t["uncond_text"][:1], {}]]
    sampled = nodes.VideoCrafterSampler.execute(patcher, positive, negative, latent, 3, 4, 7.5, 1.0)[0]["samples"]
    report["sampler_node_shape"] = list(sampled.shape)
    report["sampler_node_finite"] = bool(torch.isfinite(sampled).all())
    again = nodes.VideoCrafterSampler.execute(patcher, positive, negative, latent, 3, 4, 7.5, 1.0)[0]["samples"]
    other_fps = nodes.VideoCrafterFPS.execute([[t["text"][:1], {}]], 24)[0]
    changed = nodes.VideoCrafterSampler.execute(patcher, other_fps, negative, latent, 3, 4, 7.5, 1.0)[0]["samples"]
    report["sampler_node_repeatable"] = bool(torch.equal(sampled, again))
    report["sampler_node_fps_changes_output"] = (sampled - changed).abs().max().item()

    # (d) the checkpoint loader node on a file; errors
    with tempfile.TemporaryDirectory() as tmp:
        folder_paths.add_model_folder_path("checkpoints", tmp)
        _, i2v_sd = patchers["i2v-512-v1.0"]
        save_file(
            i2v_sd,
            os.path.join(tmp, "tiny_i2v.safetensors"),
            metadata={loading.RESAMPLER_METADATA: json.dumps(fx.TINY_RESAMPLER.to_dict())},
        )
        sd15 = {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.time_embed.0.weight": torch.zeros(1280, 320),
        }
        save_file(sd15, os.path.join(tmp, "sd15.safetensors"))
        sdxl = dict(sd15, **{"model.diffusion_model.label_emb.0.0.weight": torch.zeros(1280, 2816)})
        save_file(sdxl, os.path.join(tmp, "sdxl.safetensors"))
        loader = nodes.VideoCrafterCheckpointLoader
        model, clip, vae, clip_vision, variant = loader.execute("tiny_i2v.safetensors")
        report["loader_variant"] = variant
        report["loader_has_resampler"] = model.model.image_proj_model is not None
        report["loader_none_without_weights"] = [clip is None, vae is None, clip_vision is None]
        report["error_sd15"] = _error(lambda: loader.execute("sd15.safetensors"))
        report["error_sdxl"] = _error(lambda: loader.execute("sdxl.safetensors"))
    t2v_patcher, _ = patchers["t2v-512-v1.0"]
    i2v_patcher, _ = patchers["i2v-512-v1.0"]
    text = [[t["text"][:1], {}]]
    image_cond = [[torch.cat([t["text"][:1], torch.zeros(1, 4, 16)], dim=1), {}]]
    report["error_i2v_conditioning_t2v_model"] = _error(
        lambda: nodes.VideoCrafterImageConditioning.execute(text, text, t2v_patcher, None, torch.zeros(1, 8, 8, 3))
    )
    report["error_image_tokens_to_t2v_sampler"] = _error(
        lambda: nodes.VideoCrafterSampler.execute(t2v_patcher, image_cond, text, latent, 0, 1, 7.5, 1.0)
    )
    report["error_text_only_to_i2v_sampler"] = _error(
        lambda: nodes.VideoCrafterSampler.execute(i2v_patcher, text, text, latent, 0, 1, 7.5, 1.0)
    )
    report["error_cogvideox_latent"] = _error(
        lambda: nodes.VideoCrafterSampler.execute(
            t2v_patcher, text, text, {"samples": torch.zeros(1, 16, 3, 4, 6)}, 0, 1, 7.5, 1.0
        )
    )
    report["error_t5_conditioning"] = _error(
        lambda: nodes.VideoCrafterSampler.execute(
            t2v_patcher, [[torch.zeros(1, 226, 4096), {}]], text, latent, 0, 1, 7.5, 1.0
        )
    )

    class NotVideoCrafter:
        model = object()

    report["error_other_model"] = _error(
        lambda: nodes.VideoCrafterSampler.execute(NotVideoCrafter(), text, text, latent, 0, 1, 7.5, 1.0)
    )
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
