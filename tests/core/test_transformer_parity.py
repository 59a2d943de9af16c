"""Parity of CogVideoXTransformer with diffusers' CogVideoXTransformer3DModel (the oracle).

Tiny random configs of every variant, every weight randomised, fp32, max abs diff <= 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from cogvideox.transformer import CogVideoXTransformer

torch.set_num_threads(1)

VARIANTS = ["2b", "5b", "5b-i2v", "1.5-5b", "1.5-5b-i2v"]
# latent (T, H, W) per variant: the trained size and, where the model allows, another size
SHAPES = {
    "2b": [(3, 8, 12), (2, 6, 10)],
    "5b": [(3, 8, 12), (2, 6, 12), (3, 10, 6)],
    "5b-i2v": [(3, 8, 12)],
    "1.5-5b": [(4, 8, 12), (2, 6, 10)],
    "1.5-5b-i2v": [(4, 8, 12), (2, 8, 6)],
}


def _diffusers_rope(cfg, t, h, w):
    """Rotary tables exactly as the diffusers pipelines build them (latent t, h, w)."""
    if not cfg.use_rotary_positional_embeddings:
        return None
    p = cfg.patch_size
    gh, gw = h // p, w // p
    base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
    if cfg.patch_size_t is None:
        crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
        return get_3d_rotary_pos_embed(cfg.attention_head_dim, crops, (gh, gw), t)
    frames = (t + cfg.patch_size_t - 1) // cfg.patch_size_t
    return get_3d_rotary_pos_embed(
        cfg.attention_head_dim, None, (gh, gw), frames, grid_type="slice", max_size=(base_h, base_w)
    )


def _pair(cfg, randomize, seed=0):
    ref = CogVideoXTransformer3DModel(**cfg.to_dict()).eval()
    randomize(ref, seed=seed)
    ours = CogVideoXTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _inputs(cfg, t, h, w, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, t, h, w, generator=g)
    ctx = torch.randn(batch, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    timestep = torch.tensor([999, 321][:batch])
    return x, ctx, timestep


def _reference(ref, cfg, x, ctx, timestep, ofs):
    t, h, w = x.shape[2:]
    out = ref(
        hidden_states=x.permute(0, 2, 1, 3, 4),  # diffusers takes [B, F, C, H, W]
        encoder_hidden_states=ctx,
        timestep=timestep,
        ofs=ofs,
        image_rotary_emb=_diffusers_rope(cfg, t, h, w),
        return_dict=False,
    )[0]
    return out.permute(0, 2, 1, 3, 4)  # back to [B, C, T, H, W]


def test_state_dict_keys_match_upstream(tiny_transformer_configs):
    for name, cfg in tiny_transformer_configs.items():
        ref_sd = CogVideoXTransformer3DModel(**cfg.to_dict()).state_dict()
        ours_sd = CogVideoXTransformer(cfg).state_dict()
        assert set(ours_sd) == set(ref_sd), name
        for k, v in ref_sd.items():
            assert ours_sd[k].shape == v.shape, (name, k)


@pytest.mark.parametrize("name", VARIANTS)
def test_parity_fp32(name, tiny_transformer_configs, randomize):
    cfg = tiny_transformer_configs[name]
    ref, ours = _pair(cfg, randomize)
    ofs = torch.full((1,), 2.0) if cfg.ofs_embed_dim else None
    for t, h, w in SHAPES[name]:
        x, ctx, timestep = _inputs(cfg, t, h, w)
        with torch.no_grad():
            expected = _reference(ref, cfg, x, ctx, timestep, ofs)
            got = ours(x, timestep, ctx, ofs=ofs)
        assert got.shape == (2, cfg.out_channels, t, h, w)
        assert expected.abs().max() > 0.1  # a meaningful signal, not a near-zero output
        diff = (got - expected).abs().max().item()
        assert diff <= 1e-5, f"{name} {t}x{h}x{w}: max abs diff {diff:.3g}"


def test_parity_is_sensitive(tiny_transformer_configs, randomize):
    """The comparison detects a single perturbed weight (the test can fail)."""
    cfg = tiny_transformer_configs["5b"]
    ref, ours = _pair(cfg, randomize)
    with torch.no_grad():
        ours.transformer_blocks[1].attn1.norm_k.bias.add_(0.01)
    x, ctx, timestep = _inputs(cfg, 3, 8, 12)
    with torch.no_grad():
        diff = (ours(x, timestep, ctx) - _reference(ref, cfg, x, ctx, timestep, None)).abs().max()
    assert diff > 1e-4


def test_scalar_timestep_and_cache_reuse(tiny_transformer_configs, randomize):
    cfg = tiny_transformer_configs["1.5-5b-i2v"]
    _, ours = _pair(cfg, randomize)
    x, ctx, _ = _inputs(cfg, 4, 8, 12)
    with torch.no_grad():
        a = ours(x, 500, ctx, ofs=2.0)
        b = ours(x, torch.tensor([500.0, 500.0]), ctx, ofs=torch.tensor([2.0]))
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["2b", "1.5-5b-i2v"])
def test_half_precision_smoke(name, dtype, tiny_transformer_configs, randomize):
    cfg = tiny_transformer_configs[name]
    ref, ours = _pair(cfg, randomize)
    ofs = 2.0 if cfg.ofs_embed_dim else None
    x, ctx, timestep = _inputs(cfg, 4 if cfg.patch_size_t else 3, 8, 12)
    with torch.no_grad():
        full = ours(x, timestep, ctx, ofs=ofs)
        half = ours.to(dtype)(x.to(dtype), timestep, ctx.to(dtype), ofs=ofs)
    assert half.dtype == dtype
    assert torch.isfinite(half).all()
    assert (half.float() - full).abs().max() < 0.1 * full.abs().max()


def test_input_errors(tiny_transformer_configs, randomize):
    cfgs = tiny_transformer_configs
    t2v = CogVideoXTransformer(cfgs["5b"])
    i2v = CogVideoXTransformer(cfgs["5b-i2v"])
    v15 = CogVideoXTransformer(cfgs["1.5-5b-i2v"])
    ctx = torch.zeros(1, 7, 16)
    with pytest.raises(ValueError, match="expects 16 latent channels, got 32.*text-to-video"):
        t2v(torch.zeros(1, 32, 3, 8, 12), 1, ctx)
    with pytest.raises(ValueError, match="expects 32 latent channels, got 16.*concatenate the image latent"):
        i2v(torch.zeros(1, 16, 3, 8, 12), 1, ctx)
    with pytest.raises(ValueError, match="learned positional embeddings.*got 3 x 5 x 6"):
        i2v(torch.zeros(1, 32, 3, 10, 12), 1, ctx)
    with pytest.raises(ValueError, match="divisible by 2, got 3"):
        v15(torch.zeros(1, 32, 3, 8, 12), 1, ctx, ofs=2.0)
    with pytest.raises(ValueError, match="ofs embedding"):
        v15(torch.zeros(1, 32, 4, 8, 12), 1, ctx)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        t2v(torch.zeros(1, 16, 3, 7, 12), 1, ctx)
    with pytest.raises(ValueError, match="16-wide text encoder"):
        t2v(torch.zeros(1, 16, 3, 8, 12), 1, torch.zeros(1, 7, 8))
    with pytest.raises(ValueError, match="ofs_embed_dim \\(8\\) must equal time_embed_dim \\(24\\)"):
        CogVideoXTransformer(cfgs["1.5-5b-i2v"].replace(ofs_embed_dim=8))


def test_step_cache_hook_and_modulated_input(tiny_transformer_configs, randomize):
    """A step cache replaces the block loop; block 0's modulated input is exposed."""
    cfg = tiny_transformer_configs["5b"]
    _, ours = _pair(cfg, randomize)
    x, ctx, timestep = _inputs(cfg, 3, 8, 12)
    seen = {}

    def cache(model, tokens):
        seen["mod"] = model.first_block_modulated_input(tokens)
        return model.run_all_blocks(tokens)

    with torch.no_grad():
        plain = ours(x, timestep, ctx)
        ours.step_cache = cache
        hooked = ours(x, timestep, ctx)
    assert torch.equal(plain, hooked)
    assert seen["mod"].shape == (2, 3 * 4 * 6, cfg.inner_dim)


def test_feed_forward_in_token_chunks_equals_the_whole():
    """Without autograd the feed-forward runs FF_CHUNK_ROWS tokens at a time; per-token math, so
    the result matches the one-pass (autograd) path."""
    from cogvideox.attention import FF_CHUNK_ROWS, FeedForward

    torch.manual_seed(0)
    ff = FeedForward(32, "gelu-approximate").eval()
    x = torch.randn(2, FF_CHUNK_ROWS + 37, 32)  # [B, S, D]: several chunks, a ragged last one
    with torch.no_grad():
        chunked = ff(x)
    whole = ff(x).detach()
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)


def test_rotation_in_place_as_complex_equals_the_autograd_path():
    """Without autograd a float32 q/k is rotated in place through a complex view; with autograd
    the rotated copy is built from cos/sin. Both give the same numbers and leave the text alone."""
    from cogvideox.attention import rotate_video_
    from cogvideox.rope import rotary_cos_sin

    torch.manual_seed(0)
    text_len, grid = 5, (2, 3, 4)
    cos, sin = rotary_cos_sin(16, *grid, base_hw=(3, 4), slice_grid=False)  # [N, 16] each
    x = torch.randn(2, 3, text_len + cos.shape[0], 16)  # [B, heads, L+N, d]
    with torch.no_grad():
        in_place = rotate_video_(x.clone(), text_len, cos, sin)
    copied = rotate_video_(x.clone().requires_grad_(), text_len, cos, sin).detach()
    torch.testing.assert_close(in_place, copied, atol=1e-6, rtol=1e-6)
    assert torch.equal(in_place[:, :, :text_len], x[:, :, :text_len])
    assert not torch.allclose(in_place[:, :, text_len:], x[:, :, text_len:])


def test_parity_fp32_through_onednn(tiny_transformer_configs, randomize):
    """A config wide enough (4 heads x 64) and a latent long enough (590 rows) for the oneDNN
    linears and the chunked feed-forward: still diffusers' numbers, and oneDNN really ran."""
    from torch.profiler import profile

    cfg = tiny_transformer_configs["5b"].replace(
        num_attention_heads=4, attention_head_dim=64, sample_height=16, sample_width=24
    )
    ref, ours = _pair(cfg, randomize)
    x, ctx, timestep = _inputs(cfg, 3, 16, 24)
    with torch.no_grad():
        expected = _reference(ref, cfg, x, ctx, timestep, None)
        with profile() as prof:
            got = ours(x, timestep, ctx)
    ops = {e.name for e in prof.events()}
    if torch.backends.mkldnn.is_available():
        assert "mkldnn::_linear_pointwise" in ops
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-5 * max(1.0, expected.abs().max().item()), f"max abs diff {diff:.3g}"
