"""comfy.ops in the loaders (low-VRAM streaming, weight patches) and the core VAE output, run with
ComfyUI 0.3.75's own modules and core nodes (tests/harness/probe_core_ops_vae.py, one child
process for the module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import comfy_tree

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "harness" / "probe_core_ops_vae.py"


@pytest.fixture(scope="module")
def probe() -> dict:
    comfy_dir = comfy_tree.prepare()
    env = dict(os.environ, PYTHONPATH=str(comfy_tree.TORCHVISION_STANDIN))
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(PROBE), str(ROOT)], cwd=comfy_dir, env=env, capture_output=True, text=True,
        timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loaders_build_the_networks_from_comfy_ops(probe):
    ops = probe["ops"]
    assert ops["all_disable_weight_init"], ops["transformer"]
    # every parameter of the transformer sits in a comfy.ops layer, so all of it can stream
    assert ops["transformer_params_in_layers"] == ops["transformer_params"]
    assert any("Conv3d" in name for name in ops["vae"]) and "disable_weight_init.GroupNorm" in ops["vae"]


def test_partially_loaded_model_samples_the_same_frames(probe):
    low = probe["lowvram"]
    assert low["model_lowvram"] and 0 < low["streamed_layers"] < low["layers"], low
    assert low["frames_psnr_db"] >= 40.0, low


def test_weight_patch_applies_to_a_streamed_layer(probe):
    patch = probe["patch"]
    assert patch["streamed"] and patch["weight_function"] == 1, patch
    assert patch["changed_max_abs"] > 1e-2, patch  # the patch changed the sampled latent
    assert patch["low_vs_full_max_abs"] < 1e-4, patch  # as if baked into the weight (full load)
    assert patch["weight_restored"], patch


def test_fp8_file_runs_through_manual_cast(probe):
    """A file with fp8 block weights keeps them fp8 (weight_storage is then not applied) and its
    layers upcast per call: the same latents as the file upcast to float32 on load."""
    fp8 = probe["fp8"]
    assert fp8["block_weight_dtype"] == "torch.float8_e4m3fn" and fp8["other_weight_dtype"] == "torch.float32"
    assert all(name.startswith("manual_cast.") for name in fp8["ops"]), fp8["ops"]
    assert fp8["max_abs_diff_vs_upcast"] <= 1e-4, fp8  # float32 summation order (measured 2.2e-5)
    assert fp8["changed_vs_fp32"] > 0, fp8  # the fp8 rounding is real, so this compared something


def test_core_vae_decode_and_encode_equal_ours(probe):
    vae = probe["vae"]
    assert vae["core_images"] == vae["ours_images"] and vae["core_images"][0] == vae["frames_expected"]
    assert vae["decode_max_abs_diff"] <= 1e-4
    assert vae["encode_latent"] == vae["ours_latent"] == vae["latent"]
    assert vae["encode_max_abs_diff"] <= 1e-4 and vae["encode_tiled_max_abs_diff"] <= 1e-4
    assert vae["core_vae_in_our_decode_max_abs_diff"] <= 1e-4


def test_core_vae_decode_tiled_keeps_the_frames(probe):
    vae = probe["vae"]
    latent = vae["tiled_latent"]
    assert vae["tiled_images"] == vae["untiled_images"]
    assert vae["tiled_images"][0] == 4 * (latent[2] - 1) + 1
    assert not vae["tiled_equals_untiled"]  # the tiles and frame batches did change the pass
    assert vae["tiled_psnr_db"] >= 25.0, vae["tiled_psnr_db"]


def test_core_vae_frame_arithmetic_and_memory(probe):
    vae = probe["vae"]
    assert (vae["temporal_compression"], vae["spatial_compression"]) == (4, 8)
    assert vae["downscale_10_frames"] == 3 and vae["upscale_3_latents"] == 9
    assert vae["ten_frames_latent"] == vae["latent"]  # 10 frames encode their first 4k+1 = 9
    assert vae["memory_decode_bytes"] > 0 and vae["memory_encode_bytes"] > 0
    assert vae["memory_decode_bytes_2x_frames"] > vae["memory_decode_bytes"]


def test_wrong_vae_and_latent_get_clear_errors(probe):
    errors = probe["errors"]
    assert "CogVideoXNodeError" in errors["sd_latent_to_core_vae"] and "(1, 4, 8, 8)" in errors["sd_latent_to_core_vae"]
    for name in ("CogVideoXVAEDecode", "CogVideoXVAEEncode"):
        message = errors[f"sd_vae_to_{name}"]
        assert "CogVideoXNodeError" in message and "CogVideoX VAE Loader" in message, message


def test_core_vae_nodes_decode_in_a_served_graph(comfy_client):
    """The shipped text-to-video graph with CogVideoX VAE Decode swapped for core VAE Decode
    (Tiled) on the loader's core_vae output: ComfyUI accepts the link and the video keeps its
    4k+1 frames; core VAE Encode of those frames then feeds core VAE Decode."""
    from harness.host import output_files

    api = json.loads((ROOT / "workflows" / "api" / "text_to_video.json").read_text())
    ids = {n["class_type"]: k for k, n in api.items()}
    api[ids["CogVideoXSampler"]]["inputs"]["steps"] = 3
    decode = ids["CogVideoXVAEDecode"]
    api[decode] = {
        "class_type": "VAEDecodeTiled",
        "inputs": {"samples": [ids["CogVideoXSampler"], 0], "vae": [ids["CogVideoXVAELoader"], 1],
                   "tile_size": 64, "overlap": 32, "temporal_size": 8, "temporal_overlap": 4},
    }  # fmt: skip
    api["90"] = {"class_type": "VAEEncode", "inputs": {"pixels": [decode, 0], "vae": [ids["CogVideoXVAELoader"], 1]}}
    api["91"] = {"class_type": "VAEDecode", "inputs": {"samples": ["90", 0], "vae": [ids["CogVideoXVAELoader"], 1]}}
    api["92"] = {"class_type": "SaveImage", "inputs": {"images": ["91", 0], "filename_prefix": "corevae/roundtrip"}}
    entry = comfy_client.run(api, timeout=900)
    files = output_files(entry)
    frames = api[ids["CogVideoXEmptyLatent"]]["inputs"]["frames"]
    assert len([f for f in files if f["filename"].endswith(".png")]) == frames
    assert any(f["filename"].endswith(".mp4") for f in files), files
