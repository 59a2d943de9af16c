"""Memory controls: low-precision weight storage, block swap, automatic VAE tiles; the fast paths."""

from __future__ import annotations

import copy

import pytest
import torch

from cogvideox.configs import VAEConfig
from cogvideox.offload import auto_decode_tile, enable_block_swap, free_memory, resident_bytes
from cogvideox.quant import LowPrecisionLinear, store_weights, weight_bytes
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae_tiling import TileConfig, auto_tile

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_and_inputs(tiny_transformer_configs, randomize):
    cfg = tiny_transformer_configs["5b"]
    model = randomize(CogVideoXTransformer(cfg).eval(), seed=1, std=0.1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 3, 8, 12, generator=g)
    ctx = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    with torch.no_grad():
        ref = model(x, torch.tensor([900, 900]), ctx)
    return model, (x, torch.tensor([900, 900]), ctx), ref


@pytest.mark.parametrize(
    "storage,tol", [("bf16", 0.005), ("fp16", 0.001), ("fp8", 0.03), (torch.float8_e4m3fn, 0.03)]
)
def test_low_precision_storage_is_close(model_and_inputs, storage, tol):
    model, inputs, ref = model_and_inputs
    small = store_weights(copy.deepcopy(model), storage)
    linears = [m for m in small.modules() if isinstance(m, LowPrecisionLinear)]
    assert len(linears) == 6 * len(small.transformer_blocks)
    assert all(m.weight.dtype != torch.float32 for m in linears)
    assert weight_bytes(small) < weight_bytes(model)
    with torch.no_grad():
        out = small(*inputs)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < tol, f"{storage}: relative error {rel:.4f}"


def test_fp8_keeps_a_per_tensor_scale(model_and_inputs):
    model, _, _ = model_and_inputs
    layer = model.transformer_blocks[0].ff.net[2]
    q = LowPrecisionLinear.from_linear(layer, torch.float8_e4m3fn)
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight_scale.ndim == 0
    err = (q.upcast_weight() - layer.weight).abs().max() / layer.weight.abs().max()
    assert err < 0.07  # e4m3 keeps 3 mantissa bits
    x = torch.randn(4, layer.in_features)
    assert torch.allclose(q(x), layer(x), atol=0.1 * layer(x).abs().max().item())


def test_block_swap_cpu_to_cpu_equals_no_swap(model_and_inputs):
    model, inputs, ref = model_and_inputs
    swapped = copy.deepcopy(model)
    swap = enable_block_swap(swapped, 1, "cpu", "cpu")
    with torch.no_grad():
        out = swapped(*inputs)
    assert torch.equal(out, ref)
    assert swap.loads == 1  # the swapped block went through its hooks once
    swap.remove()
    with torch.no_grad():
        swapped(*inputs)
    assert swap.loads == 1 and swapped.transformer_blocks[0].execution_device is None


def test_resident_bytes_counts_what_stays_on_the_compute_device(model_and_inputs):
    model = model_and_inputs[0]
    total = weight_bytes(model)
    block = weight_bytes(model.transformer_blocks[0])  # the blocks are alike
    n = len(model.transformer_blocks)
    assert resident_bytes(model, 0) == total
    assert resident_bytes(model, 1) == total  # one block off, the same one back while it runs
    assert resident_bytes(model, n) == total - (n - 1) * block
    assert resident_bytes(model, 99) == resident_bytes(model, n)


def test_block_swap_validates(model_and_inputs):
    with pytest.raises(TypeError):
        enable_block_swap(torch.nn.Linear(2, 2), 1, "cpu")
    with pytest.raises(ValueError):
        enable_block_swap(model_and_inputs[0], -1, "cpu")


def test_auto_tile_plentiful_and_scarce():
    cfg = VAEConfig()
    assert auto_tile(cfg, 480, 720, budget_bytes=1 << 40) is None
    tile = auto_tile(cfg, 480, 720, budget_bytes=1 << 30)
    assert isinstance(tile, TileConfig)
    assert tile.tile_sample_min_height < 480 and tile.tile_sample_min_width < 720
    assert tile.tile_sample_min_height % 8 == 0 and tile.tile_sample_min_width % 8 == 0
    # from the device's free memory (or an explicit figure)
    assert auto_decode_tile(cfg, (1, 16, 13, 60, 90), "cpu", free_bytes=1 << 42) is None
    assert auto_decode_tile(cfg, (1, 16, 13, 60, 90), "cpu", free_bytes=1 << 30) is not None
    assert free_memory("cpu") > 0


def test_grad_path_matches_inference_path(model_and_inputs):
    """The in-place fast path (no autograd) and the autograd path compute the same thing."""
    model, inputs, ref = model_and_inputs
    with torch.enable_grad():
        out = model(*inputs)
        out.square().mean().backward()
    assert torch.allclose(out.detach(), ref, atol=1e-5)
    grad = model.transformer_blocks[0].attn1.to_q.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
