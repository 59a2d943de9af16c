"""CogVideoX LoRA through the real host: ModelPatcher patches that come and go without a reload,
with fp8 storage and block swap, and clear errors for files that are not CogVideoX LoRAs.

The LoRA files are written by ``harness.lora_files`` into the host's models/loras/.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from harness import lora_files
from harness import reliability_models as rm
from harness.host import ExecutionFailed
from harness.known_answers import run_video
from harness.reliability import assert_clear_error, assert_still_serves, execution_error

from cogvideox import synthetic

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
NODE, NODE_NAME = "CogVideoXLoRA", "CogVideoX LoRA"


def _graph(*loras: tuple[str, float], loader: dict | None = None, prefix: str = "lora/t2v", **sampler) -> dict:
    """The shipped text_to_video API twin with ``loras`` chained between the loader and the sampler."""
    api = copy.deepcopy(json.loads((ROOT / "workflows" / "api" / "text_to_video.json").read_text()))
    loader_id = next(k for k, n in api.items() if n["class_type"] == "CogVideoXModelLoader")
    sampler_id = next(k for k, n in api.items() if n["class_type"] == "CogVideoXSampler")
    api[loader_id]["inputs"].update(loader or {})
    api[sampler_id]["inputs"].update(sampler)
    source = [loader_id, 0]
    for k, (name, strength) in enumerate(loras):
        node_id = f"lora{k}"
        api[node_id] = {
            "class_type": NODE,
            "inputs": {"model": source, "lora_name": name, "strength": strength, "alpha_mode": "auto"},
        }
        source = [node_id, 0]
    api[sampler_id]["inputs"]["model"] = source
    for node in api.values():
        if node["class_type"] == "CogVideoXSaveVideo":
            node["inputs"]["filename_prefix"] = prefix
    return api


@pytest.fixture(scope="module")
def base(comfy_client) -> torch.Tensor:
    return run_video(comfy_client, _graph())


def test_strength_changes_and_removal_need_no_reload(comfy_client, base):
    """Strength 1, 0.5, 1 again, then no node, then strength 0: each a new result from the same
    loaded model (the loader stays cached: no reload), the base video back bit for bit without the LoRA."""
    one = run_video(comfy_client, _graph((lora_files.PEFT, 1.0)))
    half = run_video(comfy_client, _graph((lora_files.PEFT, 0.5)))
    again = run_video(comfy_client, _graph((lora_files.PEFT, 1.0), prefix="lora/again"))
    # scheduler "dpm" is what "auto" picks for the tiny model: the same video, but not ComfyUI's cached one
    removed = run_video(comfy_client, _graph(prefix="lora/removed", scheduler="dpm"))
    zero = run_video(comfy_client, _graph((lora_files.PEFT, 0.0), prefix="lora/zero", scheduler="dpm"))
    assert synthetic.psnr(one, base) < 30.0, "the LoRA had no visible effect"
    assert not torch.equal(half, one) and not torch.equal(half, base)
    assert synthetic.psnr(half, base) > synthetic.psnr(one, base), "half the strength is not closer to the base"
    # Freshly patched weights are new tensors, and float rounding differs with where a tensor lies
    # (the same holds for two fresh loads of the model: about 42 dB after 25 steps), so PSNR here;
    # patches piled up (strength 2) would fall far below.
    assert synthetic.psnr(again, one) > 35.0, "the same strength again gave another video (patches piled up?)"
    assert torch.equal(removed, base), "removing the node did not give the base model back"
    assert torch.equal(zero, base), "strength 0 changed the video"


def test_two_chained_loras_compose(comfy_client, base):
    """The same LoRA chained at 0.5 + 0.5 is the LoRA at 1.0 (the patches add up on one clone)."""
    one = run_video(comfy_client, _graph((lora_files.PEFT, 1.0), prefix="lora/one"))
    chained = run_video(comfy_client, _graph((lora_files.PEFT, 0.5), (lora_files.PEFT, 0.5), prefix="lora/chain"))
    assert synthetic.psnr(chained, one) > 40.0


def test_fp8_storage_and_block_swap_apply_the_lora(comfy_client, comfy_host, base):
    """A LoRA on fp8 / bf16 weight storage and with block swap: the LoRA shows (far from the base) and
    the frames stay with the plain model's LoRA video (block swap: another fresh load, so PSNR)."""
    plain = run_video(comfy_client, _graph((lora_files.PEFT, 1.0), prefix="lora/plain"))
    results = {}
    for label, loader in {
        "bf16": {"weight_storage": "bf16"},
        "fp8": {"weight_storage": "fp8_e4m3fn"},
        "swap": {"block_swap": 2},
    }.items():
        video = run_video(comfy_client, _graph((lora_files.PEFT, 1.0), loader=loader, prefix=f"lora/{label}"))
        results[label] = (synthetic.psnr(video, plain), synthetic.psnr(video, base))
    swap_base = run_video(comfy_client, _graph(loader={"block_swap": 2}, prefix="lora/swap_base"))
    print({k: f"{a:.1f} dB to the LoRA video, {b:.1f} dB to the base" for k, (a, b) in results.items()})
    assert "block swap: 2 of 4 blocks" in comfy_host.log_text()
    assert synthetic.psnr(swap_base, base) > 35.0, "block swap without the LoRA kept a LoRA patched"
    for label, (to_lora, to_base) in results.items():
        assert to_lora > to_base + 3.0, f"{label}: the LoRA did not apply ({to_lora:.1f} vs {to_base:.1f} dB)"
    assert results["swap"][0] > 35.0 and results["bf16"][0] > 35.0, results
    assert results["fp8"][0] > 25.0, results


BAD = [
    (lora_files.SD, ["no key of the file matches the CogVideoX transformer", "lora_unet__transformer_blocks"]),
    (lora_files.WRONG, ["another CogVideoX variant", "transformer_blocks."]),
    (lora_files.TRUNCATED, ["truncated"]),
    (lora_files.PICKLE, ["pickle", ".safetensors"]),
]


@pytest.mark.parametrize(("name", "needles"), BAD, ids=[b[0] for b in BAD])
def test_bad_lora_files_get_a_clear_error_and_the_server_keeps_serving(comfy_client, comfy_host, name, needles):
    rm.ensure_models(comfy_host.base_dir / "models")  # for assert_still_serves' graph
    with pytest.raises(ExecutionFailed) as failed:
        comfy_client.run(_graph((name, 1.0), prefix="lora/bad"), timeout=300)
    assert_clear_error(execution_error(failed.value), NODE, NODE_NAME, name, *needles)
    assert not (comfy_host.base_dir / "models" / lora_files.PICKLE_MARKER).exists(), "the pickle was loaded"
    assert_still_serves(comfy_client, prefix="lora/after")
