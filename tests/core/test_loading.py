"""Loading: diffusers folders (sharded), single files, detection, refusals and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
from safetensors.torch import save_file

from cogvideox import loading
from cogvideox.configs import VARIANTS, VAEConfig
from cogvideox.loading import (
    CogVideoXLoadError,
    detect_transformer_config,
    detect_vae_config,
    load_state_dict_file,
    load_transformer,
    load_vae,
    save_safetensors,
)

torch.set_num_threads(1)


def _inputs(cfg, seed=3):
    g = torch.Generator().manual_seed(seed)
    t = 4 if cfg.patch_size_t else 3
    x = torch.randn(1, cfg.in_channels, t, 8, 12, generator=g)
    ctx = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    return x, ctx


@pytest.fixture
def reference(tiny_transformer_configs, randomize):
    def make(name, seed=0):
        cfg = tiny_transformer_configs[name]
        return cfg, randomize(CogVideoXTransformer3DModel(**cfg.to_dict()).eval(), seed=seed)

    return make


@pytest.mark.parametrize("name", ["5b-i2v", "1.5-5b-i2v"])
def test_sharded_folder_and_single_file_agree(name, reference, tmp_path):
    cfg, ref = reference(name)
    folder = tmp_path / "pipe" / "transformer"
    ref.save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    assert len(list(folder.glob("*.safetensors"))) > 1  # really sharded
    assert list(folder.glob("*.safetensors.index.json"))

    from_folder, variant = load_transformer(tmp_path / "pipe")  # pipeline root -> transformer/
    assert from_folder.config == cfg and variant.name == name
    single = tmp_path / "tiny.safetensors"
    save_safetensors(from_folder, single, cfg)
    from_file, variant_file = load_transformer(single)
    assert from_file.config == cfg and variant_file == variant

    x, ctx = _inputs(cfg)
    ofs = 2.0 if cfg.ofs_embed_dim else None
    with torch.no_grad():
        a = from_folder(x, 700, ctx, ofs=ofs)
        b = from_file(x, 700, ctx, ofs=ofs)
        expected = ref(
            hidden_states=x.permute(0, 2, 1, 3, 4),
            encoder_hidden_states=ctx,
            timestep=torch.tensor([700]),
            ofs=torch.tensor([2.0]) if ofs else None,
            image_rotary_emb=None if name != "5b-i2v" else _rope(cfg, x),
            return_dict=False,
        )[0].permute(0, 2, 1, 3, 4)
    sa, sb = from_folder.state_dict(), from_file.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # bit-identical weights
    # the outputs may differ in the last bits: kernels round differently on differently aligned buffers
    assert (a - b).abs().max() <= 1e-5, (a - b).abs().max()
    if name == "5b-i2v":
        assert (a - expected).abs().max() <= 1e-5


def _rope(cfg, x):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    t, h, w = x.shape[2:]
    crops = get_resize_crop_region_for_grid((h // 2, w // 2), cfg.sample_width // 2, cfg.sample_height // 2)
    return get_3d_rotary_pos_embed(cfg.attention_head_dim, crops, (h // 2, w // 2), t)


def test_dtype_device_and_no_meta_left(reference, tmp_path):
    cfg, ref = reference("1.5-5b")
    ref.save_pretrained(tmp_path, safe_serialization=True)
    model, _ = load_transformer(tmp_path, dtype=torch.bfloat16, device="cpu")
    tensors = [*model.parameters(), *model.buffers()]
    assert all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors)
    assert not any(p.requires_grad for p in model.parameters())
    sd = load_state_dict_file(tmp_path / "diffusion_pytorch_model.safetensors", dtype=torch.float16)
    assert set(sd) == set(ref.state_dict()) and all(v.dtype == torch.float16 for v in sd.values())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_detect_released_variants_from_shapes(name):
    """Full-size configs are recovered exactly from key names and shapes alone (meta tensors)."""
    with torch.device("meta"):
        ref = CogVideoXTransformer3DModel(**VARIANTS[name].transformer.to_dict())
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    cfg = detect_transformer_config(shapes)
    assert cfg == VARIANTS[name].transformer
    assert loading.match_variant(cfg) is VARIANTS[name]


# Without metadata, what shapes cannot show (training sample size, sin-cos vs RoPE for a
# non-1920-wide model) falls back to the structurally matching released variant.
NO_METADATA_NAME = {
    "2b": "5b",
    "5b": "5b",
    "1.5-5b": "1.5-5b",
    "1.5-5b-i2v": "1.5-5b-i2v",
    "fun-2b-inp": "fun-5b-inp",
    "fun-5b-inp": "fun-5b-inp",
    "fun-2b-control": "fun-5b-control",
    "fun-5b-control": "fun-5b-control",
    "fun-1.5-5b-inp": "fun-1.5-5b-inp",
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_detect_tiny_variants_with_and_without_metadata(name, reference, tmp_path):
    cfg, ref = reference(name)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    with_meta = tmp_path / "with.safetensors"
    save_file(sd, str(with_meta), metadata={"config": json.dumps(cfg.to_dict())})
    model, variant = load_transformer(with_meta)
    assert model.config == cfg
    assert variant.name == name and variant.transformer == cfg and variant.extra["custom_of"] == name

    bare = tmp_path / "bare.safetensors"
    save_file(sd, str(bare))
    if name == "5b-i2v":
        with pytest.raises(CogVideoXLoadError, match="pos_embedding holds 79 positions.*pass a TransformerConfig"):
            load_transformer(bare)
        model, variant = load_transformer(bare, config=cfg)  # an explicit config overrides detection
        assert model.config == cfg and variant.name == name
        return
    model, variant = load_transformer(bare)
    got = model.config
    for field in ("num_attention_heads", "attention_head_dim", "num_layers", "in_channels", "out_channels"):
        assert getattr(got, field) == getattr(cfg, field), field
    for field in ("text_embed_dim", "time_embed_dim", "ofs_embed_dim", "patch_size_t", "attention_bias"):
        assert getattr(got, field) == getattr(cfg, field), field
    assert variant.name == NO_METADATA_NAME[name]
    assert variant.transformer == got


def test_v15_file_without_patch_bias_loads_with_zero_bias(reference, tmp_path):
    cfg, ref = reference("1.5-5b")
    sd = {k: v for k, v in ref.state_dict().items() if k != "patch_embed.proj.bias"}
    path = tmp_path / "nobias.safetensors"
    save_file(sd, str(path), metadata={"config": json.dumps(cfg.to_dict())})
    model, _ = load_transformer(path)
    assert torch.equal(model.patch_embed.proj.bias, torch.zeros(cfg.inner_dim))


def _sd15_vae_like():
    return {
        "encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
        "encoder.conv_in.bias": torch.zeros(128),
        "encoder.down.0.block.0.conv1.weight": torch.zeros(128, 128, 3, 3),
        "decoder.conv_out.weight": torch.zeros(3, 128, 3, 3),
        "quant_conv.weight": torch.zeros(8, 8, 1, 1),
    }


def test_other_models_are_rejected_with_clear_errors(tmp_path):
    vae2d = tmp_path / "sd15_vae.safetensors"
    save_file(_sd15_vae_like(), str(vae2d))
    with pytest.raises(CogVideoXLoadError, match="not a diffusers CogVideoX transformer.*2D image VAE"):
        load_transformer(vae2d)
    with pytest.raises(CogVideoXLoadError, match="not a diffusers CogVideoX VAE.*2D image VAE"):
        load_vae(vae2d)
    unet = tmp_path / "sd_unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(unet))
    with pytest.raises(CogVideoXLoadError, match=r"expected keys \[.*patch_embed.proj.weight.*U-Net"):
        load_transformer(unet)


def test_truncated_file_and_config_mismatch(reference, tmp_path):
    cfg, ref = reference("5b")
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(good))
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CogVideoXLoadError, match="cut.safetensors.*truncated"):
        load_transformer(cut)
    with pytest.raises(CogVideoXLoadError, match="truncated"):
        load_state_dict_file(cut)
    with pytest.raises(
        CogVideoXLoadError,
        match=r"wrong shapes .*patch_embed.proj.weight: expected \[64, 16, 2, 2\], found \[32, 16, 2, 2\]",
    ):
        load_transformer(good, config=cfg.replace(num_attention_heads=4))
    with pytest.raises(CogVideoXLoadError, match=r"24 missing \(e.g. \[.transformer_blocks.2.norm1.linear.weight"):
        load_transformer(good, config=cfg.replace(num_layers=3))


def test_pickles_are_refused_without_unpickling(tmp_path, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    for suffix in (".pt", ".pth", ".ckpt", ".bin"):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(b"\x80\x04not really a pickle")
        with pytest.raises(CogVideoXLoadError, match=rf"refusing to load .*model\{suffix}.*safetensors"):
            load_transformer(path)
        with pytest.raises(CogVideoXLoadError, match="pickle"):
            load_state_dict_file(path)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"junk")
    with pytest.raises(CogVideoXLoadError, match="diffusion_pytorch_model.bin.*pickles"):
        load_vae(folder)


TINY_VAE = dict(
    block_out_channels=(8, 16),
    down_block_types=("CogVideoXDownBlock3D",) * 2,
    up_block_types=("CogVideoXUpBlock3D",) * 2,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
)


def test_detect_vae_config_from_shapes():
    ref = AutoencoderKLCogVideoX(**TINY_VAE)
    cfg = detect_vae_config({k: tuple(v.shape) for k, v in ref.state_dict().items()})
    expected = VAEConfig().replace(**{k: v for k, v in TINY_VAE.items() if k != "norm_num_groups"})
    assert cfg == expected  # group count has no weights: the released 32 is assumed
    with torch.device("meta"):
        full = AutoencoderKLCogVideoX()
    assert detect_vae_config({k: tuple(v.shape) for k, v in full.state_dict().items()}) == VAEConfig()


def test_load_vae_sharded_and_single(tmp_path, randomize):
    pytest.importorskip("cogvideox.vae")
    ref = randomize(AutoencoderKLCogVideoX(**TINY_VAE), seed=5)
    ref.save_pretrained(tmp_path / "vae", safe_serialization=True, max_shard_size="20KB")
    vae = load_vae(tmp_path / "vae", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in vae.parameters())
    sd = ref.state_dict()
    assert all(torch.equal(v.float(), sd[k].to(torch.bfloat16).float()) for k, v in vae.state_dict().items())
    single = tmp_path / "vae.safetensors"
    save_safetensors(load_vae(tmp_path / "vae"), single, VAEConfig.from_dict(dict(ref.config)))
    again = load_vae(single)
    assert again.config == VAEConfig.from_dict(dict(ref.config))
    assert all(torch.equal(v, sd[k]) for k, v in again.state_dict().items())


def test_variant_metadata_overrides_the_released_defaults(reference, tmp_path):
    """A non-released model (the shipped tiny one) carries its latent scale and solver in metadata."""
    cfg, ref = reference("5b")
    path = tmp_path / "tiny.safetensors"
    extra = {"variant": {"name": "tiny-t2v", "scaling_factor": 1.7, "scheduler": "ddim", "fps": 12, "bogus": 1}}
    loading.save_safetensors(ref, path, cfg, extra=extra)
    _, variant = load_transformer(path)
    assert (variant.name, variant.scaling_factor, variant.scheduler, variant.fps) == ("tiny-t2v", 1.7, "ddim", 12)
    assert variant.transformer == cfg
    plain = loading.match_variant(cfg)
    assert plain.scaling_factor == VARIANTS["5b"].scaling_factor


def test_variant_metadata_carries_the_preview_projection(reference, tmp_path):
    """``latent_rgb`` in the variant metadata is the model's preview projection; a file with variant
    metadata but none gets no projection (its VAE is not the released one), a released model keeps
    the released VAE's; a malformed one is refused by name."""
    cfg, ref = reference("5b")
    rows = [[0.1 * i, -0.2, 0.3] for i in range(16)] + [[-0.5, -0.5, -0.5]]
    path = tmp_path / "with.safetensors"
    loading.save_safetensors(ref, path, cfg, extra={"variant": {"name": "tiny-t2v", "latent_rgb": rows}})
    _, variant = load_transformer(path)
    assert variant.latent_rgb == tuple(tuple(r) for r in rows)
    loading.save_safetensors(ref, tmp_path / "without.safetensors", cfg, extra={"variant": {"name": "tiny-t2v"}})
    _, variant = load_transformer(tmp_path / "without.safetensors")
    assert variant.latent_rgb is None
    assert len(loading.match_variant(cfg).latent_rgb) == 17
    bad = tmp_path / "bad.safetensors"
    loading.save_safetensors(ref, bad, cfg, extra={"variant": {"name": "tiny-t2v", "latent_rgb": [[1, 2]] * 17}})
    with pytest.raises(loading.CogVideoXLoadError, match="latent_rgb metadata .* not \\[channels \\+ 1\\]\\[3\\]"):
        load_transformer(bad)
