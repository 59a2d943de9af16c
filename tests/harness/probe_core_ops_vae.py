"""Run the pack's loaders with ComfyUI's own modules and measure, as JSON (run inside the ComfyUI
tree like ``probe_pack.py``): ``python <this file> <pack dir>``.

- ``ops``: which ``comfy.ops`` classes the loaders built the networks from;
- ``lowvram``: the pack's sampler on the shipped tiny model fully loaded and partially loaded
  through ``ModelPatcher.load(lowvram_model_memory=...)`` (ComfyUI's low-VRAM path: it marks
  layers ``comfy_cast_weights``; on a CPU-only host ``--lowvram`` is ignored because the
  memory manager never partially loads onto the CPU, so the probe calls the patcher itself),
  the frames' PSNR between the two, and the streamed layer count;
- ``patch``: a weight patch (``ModelPatcher.add_patches``) on a streamed layer changes the
  output, and equals the same patch applied to a fully loaded model;
- ``vae``: core VAE Decode / VAE Decode (Tiled) / VAE Encode on the core VAE output against
  CogVideoX VAE Decode / Encode;
- ``errors``: the messages for wrong inputs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys


def _load_pack(pack_dir: str):
    init = os.path.join(pack_dir, "__init__.py")
    spec = importlib.util.spec_from_file_location("cogvideox_nodes_probe", init, submodule_search_locations=[pack_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _psnr(a, b, peak: float = 1.0) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


def main(pack_dir: str) -> int:
    sys.path.insert(0, os.getcwd())
    import comfy.options

    sys.argv = ["main.py", "--cpu"]
    comfy.options.enable_args_parsing()
    import comfy.ops
    import torch

    pack = _load_pack(pack_dir)
    nodes = pack.NODE_CLASS_MAPPINGS
    pipeline = sys.modules["cogvideox_nodes_probe.cogvideox.pipeline"]
    frames = sys.modules["cogvideox_nodes_probe.cogvideox.frames"]
    import nodes as core  # ComfyUI's core nodes

    torch.manual_seed(0)
    result: dict = {}
    model = nodes["CogVideoXModelLoader"].execute("cogvideox_tiny_t2v.safetensors", "fp32")[0]
    ours_vae, core_vae = nodes["CogVideoXVAELoader"].execute("cogvideox_tiny_vae.safetensors", "fp32")[:2]
    net = getattr(model.patcher.model, "diffusion_model", model.patcher.model)  # the library transformer
    layers = [m for m in net.modules() if hasattr(m, "comfy_cast_weights")]
    result["ops"] = {
        "transformer": sorted({type(m).__qualname__ for m in layers}),
        "transformer_layers": len(layers),
        "transformer_params_in_layers": sum(p.numel() for m in layers for p in m.parameters(recurse=False)),
        "transformer_params": sum(p.numel() for p in net.parameters()),
        "vae": sorted(
            {type(m).__qualname__ for m in ours_vae.patcher.model.modules() if hasattr(m, "comfy_cast_weights")}
        ),
    }
    result["ops"]["all_disable_weight_init"] = all(
        type(m).__qualname__.startswith("disable_weight_init.") for m in layers
    )

    cfg = net.config
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=gen)
    neg = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=gen)
    latent = torch.zeros(1, 16, 3, cfg.sample_height, cfg.sample_width)

    def sample():
        with torch.inference_mode():
            z = pipeline.sample(net, model.variant, latent, pos, neg, steps=4, cfg=4.0, seed=3)
        video = nodes["CogVideoXVAEDecode"].execute(ours_vae, {"samples": z}, "off", 256)[0]
        return z, video

    patcher = model.patcher
    cpu = torch.device("cpu")
    patcher.patch_model(cpu, lowvram_model_memory=0)
    z_full, v_full = sample()
    patcher.unpatch_model(cpu)
    size = patcher.model_size()
    patcher.patch_model(cpu, lowvram_model_memory=size // 8)
    streamed = [m for m in layers if m.comfy_cast_weights]
    z_low, v_low = sample()
    result["lowvram"] = {
        "model_bytes": size,
        "budget_bytes": size // 8,
        "streamed_layers": len(streamed),
        "layers": len(layers),
        "model_lowvram": bool(getattr(patcher.model, "model_lowvram", False)),
        "latent_max_abs_diff": float((z_full - z_low).abs().max()),
        "frames_psnr_db": _psnr(v_full, v_low),
        "frames": list(v_full.shape),
    }
    patcher.unpatch_model(cpu)

    # a weight patch on a streamed layer
    prefix = "diffusion_model." if hasattr(patcher.model, "diffusion_model") else ""
    key = f"{prefix}transformer_blocks.0.attn1.to_q.weight"
    target = net.transformer_blocks[0].attn1.to_q
    delta = torch.randn(target.weight.shape, generator=gen) * target.weight.std() * 2
    original = target.weight.detach().clone()
    patched = patcher.clone()
    patched.add_patches({key: (delta,)}, 1.0)
    patched.patch_model(cpu, lowvram_model_memory=1)  # every layer streamed
    result["patch"] = {"weight_function": len(target.weight_function), "streamed": bool(target.comfy_cast_weights)}
    z_patch_low, _ = sample()
    patched.unpatch_model(cpu)
    patched.patch_model(cpu, lowvram_model_memory=0)  # full load: the patch is baked into the weight
    z_patch_full, _ = sample()
    patched.unpatch_model(cpu)
    result["patch"].update(
        changed_max_abs=float((z_patch_low - z_full).abs().max()),
        low_vs_full_max_abs=float((z_patch_low - z_patch_full).abs().max()),
        weight_restored=bool(torch.equal(target.weight, original) and not target.weight_function),
    )

    # fp8 weights in the file: kept fp8, run through manual cast
    import tempfile

    import folder_paths
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    loading = sys.modules["cogvideox_nodes_probe.cogvideox.loading"]
    src = folder_paths.get_full_path("diffusion_models", "cogvideox_tiny_t2v.safetensors")
    with safe_open(src, framework="pt") as f:
        metadata = f.metadata()
    state = {
        k: v.to(torch.float8_e4m3fn) if k.startswith("transformer_blocks.") and v.ndim == 2 else v
        for k, v in load_file(src).items()
    }
    tmp = tempfile.mkdtemp()
    save_file(state, os.path.join(tmp, "tiny_fp8.safetensors"), metadata=metadata)
    folder_paths.add_model_folder_path("diffusion_models", tmp)
    model8 = nodes["CogVideoXModelLoader"].execute("tiny_fp8.safetensors", "fp32", "fp8_e4m3fn")[0]
    net8 = getattr(model8.patcher.model, "diffusion_model", model8.patcher.model)
    upcast, _ = loading.load_transformer(os.path.join(tmp, "tiny_fp8.safetensors"), dtype=torch.float32)
    with torch.inference_mode():
        z8 = pipeline.sample(net8, model8.variant, latent, pos, neg, steps=4, cfg=4.0, seed=3)
        z_up = pipeline.sample(upcast, model8.variant, latent, pos, neg, steps=4, cfg=4.0, seed=3)
    result["fp8"] = {
        "ops": sorted({type(m).__qualname__ for m in net8.modules() if hasattr(m, "comfy_cast_weights")}),
        "block_weight_dtype": str(net8.transformer_blocks[0].attn1.to_q.weight.dtype),
        "other_weight_dtype": str(net8.proj_out.weight.dtype),
        "max_abs_diff_vs_upcast": float((z8 - z_up).abs().max()),
        "changed_vs_fp32": float((z8 - z_full).abs().max()),
    }

    # core VAE nodes against ours on a sampled latent
    z = z_full
    ours_img = nodes["CogVideoXVAEDecode"].execute(ours_vae, {"samples": z}, "auto", 256)[0]
    core_img = core.VAEDecode().decode(core_vae, {"samples": z})[0]
    h, w = core_img.shape[1:3]
    # a bigger latent for tiling: 5 latent frames, 16x16 (128 px), tiles of 64 px and 3 latent frames
    big = torch.cat([z, z[:, :, 1:]], dim=2)
    big = torch.cat([torch.cat([big, big.flip(4)], dim=4), torch.cat([big.flip(3), big], dim=4)], dim=3)
    tiled = core.VAEDecodeTiled().decode(core_vae, {"samples": big}, tile_size=64, overlap=32, temporal_size=12,
                                         temporal_overlap=4)[0]  # fmt: skip
    untiled_off = nodes["CogVideoXVAEDecode"].execute(ours_vae, {"samples": big}, "off", 256)[0]
    pixels = ours_img
    ours_lat = nodes["CogVideoXVAEEncode"].execute(ours_vae, pixels, "auto", 256)[0]["samples"]
    core_lat = core.VAEEncode().encode(core_vae, pixels)[0]["samples"]
    # one tile covering the frame (128 px): core's tiled path with our VAE, comparable with the untiled encode
    core_lat_tiled = core.VAEEncodeTiled().encode(core_vae, pixels, 128, 32, 64, 8)[0]["samples"]
    result["vae"] = {
        "latent": list(z.shape),
        "ours_images": list(ours_img.shape),
        "core_images": list(core_img.shape),
        "decode_max_abs_diff": float((ours_img - core_img).abs().max()),
        "tiled_latent": list(big.shape),
        "tiled_images": list(tiled.shape),
        "untiled_images": list(untiled_off.shape),
        "tiled_psnr_db": _psnr(tiled, untiled_off),
        "tiled_equals_untiled": bool(torch.equal(tiled, untiled_off)),
        "encode_latent": list(core_lat.shape),
        "ours_latent": list(ours_lat.shape),
        "encode_max_abs_diff": float((ours_lat - core_lat).abs().max()),
        "encode_tiled_max_abs_diff": float((ours_lat - core_lat_tiled).abs().max()),
        "frames_expected": frames.pixel_frames(z.shape[2]),
        "temporal_compression": core_vae.temporal_compression_decode(),
        "spatial_compression": core_vae.spacial_compression_decode(),
        "downscale_10_frames": core_vae.downscale_ratio[0](10),
        "upscale_3_latents": core_vae.upscale_ratio[0](3),
        "memory_decode_bytes": core_vae.memory_used_decode(z.shape, torch.float32),
        "memory_encode_bytes": core_vae.memory_used_encode((1, 3, 9, h, w), torch.float32),
        "memory_decode_bytes_2x_frames": core_vae.memory_used_decode((1, 16, 6, *z.shape[3:]), torch.float32),
    }
    # ten frames encode to the latent of their first nine
    ten = torch.cat([pixels, pixels[-1:]])
    result["vae"]["ten_frames_latent"] = list(core.VAEEncode().encode(core_vae, ten)[0]["samples"].shape)

    errors = {}
    try:
        core.VAEDecode().decode(core_vae, {"samples": torch.zeros(1, 4, 8, 8)})
    except Exception as e:  # noqa: BLE001 - the message is what is measured
        errors["sd_latent_to_core_vae"] = f"{type(e).__name__}: {e}"
    import comfy.sd
    import comfy.taesd.taesd

    sd_vae = comfy.sd.VAE(sd=comfy.taesd.taesd.TAESD().state_dict())  # a core image VAE (4 channels)
    for name, args in (
        ("CogVideoXVAEDecode", ({"samples": z}, "auto", 256)),
        ("CogVideoXVAEEncode", (pixels, "auto", 256)),
    ):
        try:
            nodes[name].execute(sd_vae, *args)
        except Exception as e:  # noqa: BLE001
            errors[f"sd_vae_to_{name}"] = f"{type(e).__name__}: {e}"
    # the core VAE output also works where ours is expected (it holds the same VAE)
    result["vae"]["core_vae_in_our_decode_max_abs_diff"] = float(
        (nodes["CogVideoXVAEDecode"].execute(core_vae, {"samples": z}, "auto", 256)[0] - ours_img).abs().max()
    )
    result["errors"] = errors
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
