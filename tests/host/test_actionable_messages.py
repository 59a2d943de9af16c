"""Messages a user can act on, through the real host: every error names the node, the file (for
loaders) and the fix, never a bare Python exception. Broken diffusers folders (malformed, empty
or wrongly typed config.json, a truncated shard index), integer weights, a folder without
config.json (not listed: the log says why), OS errors from file names, a NaN image (no longer
blamed on fp16), cfg below 1 (documented and logged) and prefixes of '.' or with control
characters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from harness import reliability_models as rm
from harness.reliability import assert_clear_error, i2v_graph, t2v_graph
from harness.reliability_links import failed, refusal_text, rejected, saved_videos
from safetensors import safe_open
from safetensors.torch import save_file

pytestmark = pytest.mark.host

LOADER, LOADER_NAME = "CogVideoXModelLoader", "CogVideoX Model Loader"
SAVE, SAVE_NAME = "CogVideoXSaveVideo", "CogVideoX Save Video"


@pytest.fixture(scope="module")
def models(comfy_host) -> Path:
    models = comfy_host.base_dir / "models"
    rm.ensure_models(models)
    return models


@pytest.fixture
def client(comfy_client, models):
    return comfy_client


def _config(models: Path) -> dict:
    with safe_open(str(models / "diffusion_models" / rm.T2V), framework="pt") as f:
        return json.loads(f.metadata()["config"])


def _diffusers_folder(models: Path, name: str, config: str | None, sharded: bool = False) -> str:
    """models/diffusers/<name>/transformer with the rel T2V weights and ``config`` as config.json."""
    folder = models / "diffusers" / name / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / ("diffusion_pytorch_model-00001-of-00001.safetensors" if sharded
                        else "diffusion_pytorch_model.safetensors")
    shutil.copyfile(models / "diffusion_models" / rm.T2V, weights)
    if sharded:
        with safe_open(str(weights), framework="pt") as f:
            index = {"metadata": {}, "weight_map": {k: weights.name for k in f.keys()}}
        text = json.dumps(index)
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(text[: len(text) // 2])
    if config is not None:
        (folder / "config.json").write_text(config)
    return f"diffusers/{name}/transformer"


CONFIG_CASES = [
    ("malformed", lambda cfg: json.dumps(cfg)[:40], False, ["config.json is not valid JSON", "download it again"]),
    ("empty", lambda cfg: "", False, ["config.json is empty", "download it again"]),
    ("wrong-type", lambda cfg: json.dumps({**cfg, "num_layers": "two"}), False,
     ["values of the wrong type", "num_layers='two' (expected int)", "fix or download it again"]),
    ("truncated-index", lambda cfg: json.dumps(cfg), True,
     ["the shard index", "index.json is not valid JSON", "download it again"]),
]


@pytest.mark.parametrize(("config", "sharded", "needles"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_broken_diffusers_folders_name_the_file_and_the_fix(client, models, config, sharded, needles):
    name = _diffusers_folder(models, f"rel2_{len(needles)}_{int(sharded)}_{abs(hash(needles[0])) % 997}",
                             config(_config(models)), sharded)
    assert name in client.choices(LOADER, "model_name")
    message = assert_clear_error(failed(client, t2v_graph(model=name)), LOADER, LOADER_NAME, name, *needles)
    assert "JSONDecodeError" not in message and "TypeError" not in message


def test_integer_weights_are_refused_as_quantized(client, models):
    name = "rel2_int8.safetensors"
    path = models / "diffusion_models" / name
    if not path.exists():
        with safe_open(str(models / "diffusion_models" / rm.T2V), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata()
        state["proj_out.weight"] = (state["proj_out.weight"] * 100).to(torch.int8)
        save_file(state, str(path), metadata=metadata)
    assert_clear_error(
        failed(client, t2v_graph(model=name)), LOADER, LOADER_NAME, name, "proj_out.weight (int8)",
        "int8/GGUF-style quantized checkpoints are not supported", "bf16/fp16/fp32 .safetensors",
    )


def test_a_diffusers_folder_without_config_is_not_listed_and_the_log_says_why(client, models, comfy_host):
    name = _diffusers_folder(models, "rel2_noconfig", None)
    before = len(comfy_host.log_text())
    assert name not in client.choices(LOADER, "model_name")
    log = comfy_host.log_text()[before:]
    assert "rel2_noconfig" in log and "is not listed in the loaders: it has no config.json" in log, log[-2000:]


# ---------------------------------------------------------------- Save Video: names the OS refuses
def test_a_file_name_too_long_names_the_prefix_and_the_fix(client):
    api = t2v_graph(prefix="rel2/" + "x" * 300)
    assert_clear_error(failed(client, api), SAVE, SAVE_NAME, "File name too long", "shorten filename_prefix")


def test_a_folder_that_is_a_file_names_the_prefix_and_the_fix(client, comfy_host):
    blocker = comfy_host.base_dir / "output" / "rel2" / "a_file"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    api = t2v_graph(prefix="rel2/a_file/clip")
    assert_clear_error(
        failed(client, api), SAVE, SAVE_NAME, "rel2/a_file", "no file has the name of one of its folders"
    )


@pytest.mark.parametrize(
    ("prefix", "words"),
    [(".", "filename_prefix '.' makes a hidden file or uses '.' as a folder"),
     ("rel2/.hidden", "filename_prefix 'rel2/.hidden' makes a hidden file"),
     ("rel2/two\nlines", "filename_prefix 'rel2/two\\nlines' contains control characters ('\\n')"),
     ("rel2/tab\there", "contains control characters ('\\t')")],
    ids=["dot", "hidden", "newline", "tab"],
)
def test_prefixes_the_file_system_would_mangle_are_refused(client, prefix, words):
    text = refusal_text(rejected(client, t2v_graph(prefix=prefix)), "10")
    assert text.startswith(f"{SAVE_NAME}: ") and words in text, text
    assert "e.g. 'CogVideoX/clip'" in text or "like 'CogVideoX/clip'" in text


# ---------------------------------------------------------------- NaN and cfg
def test_a_nan_image_is_blamed_on_the_image_not_on_fp16(client):
    api = i2v_graph(prefix="rel2/msg/nan")
    api["13"] = {"class_type": "ImageBlend", "inputs": {"image1": ["11", 0], "image2": ["11", 0],
                                                        "blend_factor": float("nan"), "blend_mode": "normal"}}
    api["6"]["inputs"]["image"] = ["13", 0]
    message = assert_clear_error(
        failed(client, api), "CogVideoXImageToVideo", "CogVideoX Image To Video", "NaN",
        "check the node that makes them", "not a precision problem",
    )
    assert "bf16" not in message and "float16" not in message


def test_nan_during_sampling_in_float32_blames_the_weights(client):
    message = assert_clear_error(
        failed(client, t2v_graph(model=rm.T2V_INF, steps=3)), "CogVideoXSampler", "CogVideoX Sampler",
        "NaN/inf", "step 1/3", "not a float16 overflow", rm.T2V_INF, "download the file again",
    )
    assert "set weight_dtype to bf16" not in message


def test_cfg_below_one_is_documented_and_logged(client, comfy_host):
    tooltip = client.object_info("CogVideoXSampler")["CogVideoXSampler"]["input"]["required"]["cfg"][1]["tooltip"]
    assert "values below 1 act as 1" in tooltip
    api = t2v_graph(prefix="rel2/msg/cfg")
    api["8"]["inputs"]["cfg"] = 0.5
    before = len(comfy_host.log_text())
    videos = saved_videos(client, client.run(api, timeout=300))
    assert len(videos) == 1
    assert "cfg 0.50 below 1 acts as 1" in comfy_host.log_text()[before:]
