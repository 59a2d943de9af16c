"""Every safetensors extension ComfyUI lists in its model folders loads: `.sft` copies of the
transformer, the VAE and the T5 encoder run the whole graph (they used to be listed and then
refused as "expected a .safetensors file")."""

from __future__ import annotations

import shutil

import pytest
from harness import reliability_models as rm
from harness.host import combo_choices
from harness.reliability import t2v_graph
from harness.reliability_links import saved_videos

pytestmark = pytest.mark.host


def test_sft_files_are_listed_and_load(comfy_host, comfy_client):
    models = comfy_host.base_dir / "models"
    rm.ensure_models(models)
    names = {}
    for folder, name in (("diffusion_models", rm.T2V), ("vae", rm.VAE), ("text_encoders", rm.T5)):
        sft = name.replace(".safetensors", "_copy.sft")
        if not (models / folder / sft).exists():
            shutil.copyfile(models / folder / name, models / folder / sft)
        names[folder] = sft
    info = comfy_client.object_info()
    assert names["diffusion_models"] in combo_choices(info["CogVideoXModelLoader"]["input"]["required"]["model_name"])
    assert names["vae"] in combo_choices(info["CogVideoXVAELoader"]["input"]["required"]["vae_name"])
    assert names["text_encoders"] in combo_choices(info["CogVideoXT5Loader"]["input"]["required"]["t5_name"])
    api = t2v_graph(model=names["diffusion_models"], prefix="rel2/sft")
    api["7"]["inputs"]["vae_name"] = names["vae"]
    api["1"]["inputs"]["t5_name"] = names["text_encoders"]
    ((_, video, _),) = saved_videos(comfy_client, comfy_client.run(api, timeout=300))
    assert (video.frames, video.width, video.height) == (rm.FRAMES, rm.SIZE, rm.SIZE)
