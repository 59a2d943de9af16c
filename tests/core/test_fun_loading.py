"""CogVideoX-Fun variants from files: diffusers folders with VideoX-Fun's config.json, single files."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from safetensors.torch import save_file

from cogvideox import loading
from cogvideox.loading import load_transformer


def _state(cfg, randomize, seed=0):
    ref = randomize(CogVideoXTransformer3DModel(**cfg.to_dict()).eval(), seed=seed)
    return {k: v.contiguous() for k, v in ref.state_dict().items()}


@pytest.mark.parametrize(
    "name,kind", [("fun-5b-inp", "inpaint"), ("fun-2b-control", "control"), ("fun-1.5-5b-inp", "inpaint")]
)
def test_diffusers_folder_with_videox_fun_config(name, kind, tiny_transformer_configs, randomize, tmp_path):
    """A pipeline folder as VideoX-Fun ships it: transformer/config.json with its extra keys."""
    cfg = tiny_transformer_configs[name]
    folder = tmp_path / "CogVideoX-Fun" / "transformer"
    folder.mkdir(parents=True)
    save_file(_state(cfg, randomize), str(folder / "diffusion_pytorch_model.safetensors"))
    config = {**cfg.to_dict(), "add_noise_in_inpaint_model": True, "_class_name": "CogVideoXTransformer3DModel"}
    config.pop("ofs_embed_dim")  # VideoX-Fun's transformer has no such argument
    (folder / "config.json").write_text(json.dumps(config))
    model, variant = load_transformer(tmp_path / "CogVideoX-Fun")
    assert variant.fun == kind and variant.name == name
    assert variant.condition_channels == (17 if kind == "inpaint" else 16)
    assert not variant.is_i2v and model.config.in_channels == cfg.in_channels


def test_32_channels_tell_i2v_from_fun_control(tiny_transformer_configs, randomize, tmp_path):
    """Without metadata: learned positions or ofs = I2V, neither = Fun Control. Pack files that carry
    variant metadata without "fun" (the shipped tiny I2V) stay image-to-video."""
    control = tiny_transformer_configs["fun-5b-control"]
    bare = tmp_path / "bare.safetensors"
    save_file(_state(control, randomize), str(bare))
    assert load_transformer(bare)[1].fun == "control"
    for i2v in ("5b-i2v", "1.5-5b-i2v"):
        cfg = tiny_transformer_configs[i2v]
        assert loading.match_variant(cfg).is_i2v and loading.match_variant(cfg).fun is None
    tagged = tmp_path / "tagged.safetensors"
    meta = {"config": json.dumps(control.to_dict()), "variant": json.dumps({"name": "my-i2v", "scheduler": "dpm"})}
    save_file(_state(control, randomize), str(tagged), metadata=meta)
    variant = load_transformer(tagged)[1]
    assert variant.name == "my-i2v" and variant.is_i2v and variant.fun is None
    meta["variant"] = json.dumps({"name": "my-fun", "fun": "control"})
    save_file(_state(control, randomize), str(tagged), metadata=meta)
    assert load_transformer(tagged)[1].fun == "control"


def test_fun_inp_single_file_runs_with_its_conditioning(tiny_transformer_configs, randomize, tmp_path):
    from cogvideox.pipeline import sample

    cfg = tiny_transformer_configs["fun-5b-inp"]
    path = tmp_path / "inp.safetensors"
    save_file(_state(cfg, randomize), str(path))
    model, variant = load_transformer(path)
    pos = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim)
    latent = torch.zeros(1, 16, 3, 8, 12)
    kw = dict(steps=2, cfg=1.0)
    out = sample(
        model,
        variant,
        latent,
        pos,
        concat_latent=torch.zeros_like(latent),
        concat_mask=torch.ones(1, 1, 3, 8, 12),
        **kw,
    )
    assert out.shape == latent.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="needs a masked-video latent and a mask"):
        sample(model, variant, latent, pos, **kw)
    with pytest.raises(ValueError, match="must cover the latent's 3 frames"):
        sample(
            model,
            variant,
            latent,
            pos,
            concat_latent=torch.zeros(1, 16, 2, 8, 12),
            concat_mask=torch.ones(1, 1, 2, 8, 12),
            **kw,
        )
    with pytest.raises(ValueError, match="not image-to-video"):
        sample(model, variant, latent, pos, image_latent=torch.zeros(1, 16, 1, 8, 12), **kw)
