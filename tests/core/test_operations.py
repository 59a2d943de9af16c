"""The ``operations`` argument: the networks built from other layer classes.

``CastingOps`` stands in for ComfyUI's ``comfy.ops`` (the library never imports comfy): layers
with ``comfy_cast_weights`` whose forward casts the weight to the input's dtype and device and
applies ``weight_function`` / ``bias_function`` (what ComfyUI sets for partial loading and LoRA
patches on streamed layers). The host tests run the real ``comfy.ops`` (tests/host/test_core_ops.py).
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cogvideox import ops
from cogvideox.configs import VAEConfig
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.vae import CogVideoXVAE


def _cast(layer, x):
    w = layer.weight.to(x.dtype)
    b = None if layer.bias is None else layer.bias.to(x.dtype)
    for f in layer.weight_function:
        w = f(w)
    for f in layer.bias_function:
        b = f(b)
    return w, b


class _Casting:
    comfy_cast_weights = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_function, self.bias_function = [], []
        self.calls = 0

    def _casting(self) -> bool:
        return self.comfy_cast_weights or bool(self.weight_function) or bool(self.bias_function)


def _casting_class(base, fn):
    def forward(self, x):
        if not self._casting():
            return base.forward(self, x)
        self.calls += 1
        return fn(self, x, *_cast(self, x))

    return type(f"Casting{base.__name__}", (_Casting, base), {"forward": forward})


CastingOps = types.SimpleNamespace(
    Linear=_casting_class(nn.Linear, lambda m, x, w, b: F.linear(x, w, b)),
    Conv2d=_casting_class(nn.Conv2d, lambda m, x, w, b: m._conv_forward(x, w, b)),
    Conv3d=_casting_class(nn.Conv3d, lambda m, x, w, b: m._conv_forward(x, w, b)),
    LayerNorm=_casting_class(nn.LayerNorm, lambda m, x, w, b: F.layer_norm(x, m.normalized_shape, w, b, m.eps)),
    GroupNorm=_casting_class(nn.GroupNorm, lambda m, x, w, b: F.group_norm(x, m.num_groups, w, b, m.eps)),
)


def _casting_layers(model):
    return [m for m in model.modules() if isinstance(m, _Casting) and m.weight is not None]


def _transformer_pair(cfg, randomize):
    ref = randomize(CogVideoXTransformer(cfg).eval(), seed=3)
    ours = CogVideoXTransformer(cfg, operations=CastingOps).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _inputs(cfg, frames=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_channels, frames, cfg.sample_height, cfg.sample_width, generator=g)
    ctx = torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    return x, ctx


@pytest.mark.parametrize("variant", ["2b", "5b"])
def test_transformer_with_other_operations_keeps_names_and_numbers(tiny_transformer_configs, randomize, variant):
    cfg = tiny_transformer_configs[variant]
    ref, ours = _transformer_pair(cfg, randomize)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert len(_casting_layers(ours)) > 10
    x, ctx = _inputs(cfg)
    with torch.no_grad():
        expected = ref(x, 500, ctx)
        plain = ours(x, 500, ctx)  # resident layers: the same fast paths as torch.nn
        for m in _casting_layers(ours):
            m.comfy_cast_weights = True  # as ComfyUI's partial load marks streamed layers
        cast = ours(x, 500, ctx)
    assert torch.allclose(plain, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(cast, expected, atol=1e-5, rtol=1e-5)
    layers = _casting_layers(ours)
    assert all(m.calls > 0 for m in layers), [type(m).__name__ for m in layers if m.calls == 0]


def test_transformer_weight_patches_apply_through_the_layers(tiny_transformer_configs, randomize):
    """A ``weight_function`` (a LoRA patch on a streamed layer) changes the output as if the weight
    itself were patched, in every kind of layer the fast paths would otherwise read directly."""
    cfg = tiny_transformer_configs["5b"]
    ref, ours = _transformer_pair(cfg, randomize)
    names = [
        "transformer_blocks.0.attn1.to_q",
        "transformer_blocks.0.ff.net.2",
        "transformer_blocks.1.norm1.linear",
        "time_embedding.linear_1",
        "transformer_blocks.0.attn1.norm_k",
    ]
    x, ctx = _inputs(cfg)
    with torch.no_grad():
        base = ref(x, 500, ctx)
        for name in names:
            ours.get_submodule(name).weight_function = [lambda w: w * 1.5]
            ref.get_submodule(name).weight.mul_(1.5)
        expected = ref(x, 500, ctx)
        patched = ours(x, 500, ctx)
    assert (expected - base).abs().max() > 1e-3
    assert torch.allclose(patched, expected, atol=1e-5, rtol=1e-5)


def test_manual_cast_storage_computes_in_the_compute_dtype(tiny_transformer_configs, randomize):
    """Weights stored in bf16, layers that cast (``comfy_cast_weights``) fed float32: the output is
    that of a float32 model holding the bf16-rounded weights."""
    cfg = tiny_transformer_configs["5b"]
    ref = randomize(CogVideoXTransformer(cfg).eval(), seed=3)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ours = CogVideoXTransformer(cfg, operations=CastingOps, compute_dtype=torch.float32).eval()
    for m in _casting_layers(ours):
        m.comfy_cast_weights = True
    ours.load_state_dict(ref.state_dict())
    ours.to(torch.bfloat16)
    assert ours.proj_out.weight.dtype == torch.bfloat16
    x, ctx = _inputs(cfg)
    with torch.no_grad():
        out = ours(x, 500, ctx)
        expected = ref(x, 500, ctx)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)


VAE_TINY = VAEConfig(
    block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4
)


def test_vae_with_other_operations_keeps_names_and_numbers(randomize):
    ref = randomize(CogVideoXVAE(VAE_TINY).eval(), seed=1, std=0.1)
    ours = CogVideoXVAE(VAE_TINY, operations=CastingOps).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        z_ref = ref.encode(video)
        x_ref = ref.decode(z_ref)
        for m in _casting_layers(ours):
            m.comfy_cast_weights = True
        z = ours.encode(video)
        x = ours.decode(z_ref)
        gn = ours.decoder.norm_out.norm_layer
        gn.weight_function = [lambda w: w + 1.0]
        patched = ours.decode(z_ref)
    assert torch.allclose(z, z_ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(x, x_ref, atol=1e-5, rtol=1e-5)
    assert (patched - x_ref).abs().max() > 1e-3  # the group norm's patch reached the lean path
    convs = [m for m in _casting_layers(ours) if isinstance(m, nn.Conv3d)]
    assert convs and all(m.calls > 0 for m in convs)


def test_resident_and_plain_linear():
    assert ops.plain_linear(nn.Linear(4, 4)) and ops.plain_linear(CastingOps.Linear(4, 4))
    cast = CastingOps.Linear(4, 4)
    cast.weight_function = [lambda w: w]
    assert not ops.resident(cast) and not ops.plain_linear(cast)
    assert not ops.plain_linear(nn.Linear(4, 4, bias=False))

    class Other(nn.Linear):  # an unknown subclass keeps its own forward
        pass

    assert not ops.plain_linear(Other(4, 4))
