"""CogVideoX LoRA files (cogvideox/lora.py): formats, scales and parity with diffusers + PEFT.

Oracle: diffusers' ``CogVideoXPipeline.load_lora_weights`` + ``set_adapters`` on a tiny random
transformer. The kohya (CogVideoX-Fun) rule ``W + strength * alpha / rank * up @ down`` is
checked layer by layer against the weights themselves.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel
from safetensors.torch import save_file
from test_transformer_parity import _inputs, _reference

from cogvideox import lora as L
from cogvideox.transformer import CogVideoXTransformer

pytest.importorskip("peft")
torch.set_num_threads(1)

# One module of every Linear kind the transformer has (CogVideoX-Fun trains all of them).
LAYER_KINDS = (
    "transformer_blocks.0.attn1.to_q",
    "transformer_blocks.0.attn1.to_k",
    "transformer_blocks.1.attn1.to_v",
    "transformer_blocks.1.attn1.to_out.0",
    "transformer_blocks.0.ff.net.0.proj",
    "transformer_blocks.1.ff.net.2",
    "transformer_blocks.0.norm1.linear",
    "transformer_blocks.1.norm2.linear",
    "time_embedding.linear_1",
    "time_embedding.linear_2",
    "patch_embed.text_proj",
    "norm_out.linear",
    "proj_out",
)


def _peft_lora(targets, modules, rank, seed, std=0.15) -> dict[str, torch.Tensor]:
    """A diffusers-format LoRA state dict (``transformer.`` prefix) with random, non-zero factors."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in modules:
        o, i = targets[m]
        out[f"transformer.{m}.lora_A.weight"] = torch.randn(rank, i, generator=g) * std
        out[f"transformer.{m}.lora_B.weight"] = torch.randn(o, rank, generator=g) * std
    return out


def _models(cfg, randomize):
    ref = CogVideoXTransformer3DModel(**cfg.to_dict()).eval()
    randomize(ref, seed=3)
    ours = CogVideoXTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def setup(tiny_transformer_configs, tmp_path_factory, randomize):
    cfg = tiny_transformer_configs["5b"]
    ref, ours = _models(cfg, randomize)
    targets = L.linear_targets(ours)
    tmp = tmp_path_factory.mktemp("loras")
    # LoRA a: rank 4, lora_alpha 8 in diffusers' header metadata (scale 2), with a rank/alpha pattern.
    a = _peft_lora(targets, LAYER_KINDS, 4, seed=10)
    meta = {"transformer.r": 4, "transformer.lora_alpha": 8, "transformer.rank_pattern": {},
            "transformer.alpha_pattern": {"proj_out": 2}, "transformer.target_modules": list(LAYER_KINDS)}
    save_file(a, tmp / "a.safetensors", metadata={"format": "pt", L.METADATA_KEY: json.dumps(meta)})
    # LoRA b: rank 2, no metadata (scale 1), attention only (what cogvideox-factory trains).
    attn = [f"transformer_blocks.{b}.attn1.{p}" for b in (0, 1) for p in ("to_q", "to_k", "to_v", "to_out.0")]
    b = _peft_lora(targets, attn, 2, seed=11)
    save_file(b, tmp / "b.safetensors")
    return cfg, ref, ours, targets, tmp


def _run(model_fn, cfg):
    x, ctx, timestep = _inputs(cfg, 3, 8, 12)
    with torch.no_grad():
        return model_fn(x, ctx, timestep)


def test_two_peft_loras_match_diffusers_set_adapters(setup):
    cfg, ref, ours, targets, tmp = setup
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=ref, scheduler=None)
    pipe.load_lora_weights(str(tmp / "a.safetensors"), adapter_name="a")
    pipe.load_lora_weights(str(tmp / "b.safetensors"), adapter_name="b")
    pipe.set_adapters(["a", "b"], [0.7, -0.3])
    expected = _run(lambda x, c, t: _reference(ref, cfg, x, c, t, None), cfg)
    pipe.set_adapters(["a", "b"], [0.0, 0.0])
    base = _run(lambda x, c, t: _reference(ref, cfg, x, c, t, None), cfg)
    pipe.unload_lora_weights()

    merged = CogVideoXTransformer(cfg).eval()
    merged.load_state_dict(ours.state_dict())
    la = L.load_lora(tmp / "a.safetensors", targets)
    lb = L.load_lora(tmp / "b.safetensors", targets)
    assert la.format == lb.format == "diffusers"
    assert la.layers["proj_out"].scale == 0.5 and la.layers["transformer_blocks.0.attn1.to_q"].scale == 2.0
    assert lb.layers["transformer_blocks.0.attn1.to_q"].scale == 1.0
    L.merge(merged, la, 0.7)
    L.merge(merged, lb, -0.3)
    got = _run(lambda x, c, t: merged(x, t, c), cfg)
    assert (expected - base).abs().max() > 1e-2, "the LoRAs barely change the output: the test could not fail"
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-5, f"max abs diff {diff:.3g} from diffusers + PEFT"


@pytest.mark.parametrize("fun", [True, False], ids=["fun_double_underscore", "kohya_single_underscore"])
def test_kohya_keys_give_the_same_layers(setup, fun):
    _, _, _, targets, tmp = setup
    from safetensors.torch import load_file

    peft = L.load_lora(tmp / "a.safetensors", targets)
    alphas = {m: layer.scale * layer.rank for m, layer in peft.layers.items()}
    kohya = L.to_kohya(load_file(tmp / "a.safetensors"), alphas, fun=fun)
    assert any(k.startswith("lora_unet__transformer_blocks_0_attn1_to_q.") for k in kohya) == fun
    save_file(kohya, tmp / "k.safetensors")
    got = L.load_lora(tmp / "k.safetensors", targets)
    assert got.format == ("kohya (CogVideoX-Fun)" if fun else "kohya")
    assert set(got.layers) == set(peft.layers)
    for m, layer in got.layers.items():
        assert torch.equal(layer.delta(), peft.layers[m].delta()), m


def test_comfy_prefixed_keys(setup):
    _, _, _, targets, tmp = setup
    from safetensors.torch import load_file

    renames = (("transformer.", "diffusion_model."), ("lora_A", "lora_down"), ("lora_B", "lora_up"))
    sd = {}
    for key, value in load_file(tmp / "b.safetensors").items():
        for old, new in renames:
            key = key.replace(old, new, 1)
        sd[key] = value
    got = L.parse_lora(sd, {}, targets)
    assert got.format == "comfy" and len(got.layers) == 8 and not got.unmatched


def test_fun_merge_rule_on_every_layer_kind(setup):
    """``W + strength * alpha / rank * up @ down`` for each targeted kind of Linear (VideoX-Fun's merge_lora)."""
    cfg, _, ours, targets, tmp = setup
    g = torch.Generator().manual_seed(5)
    rank, alpha, strength = 4, 3.0, 0.6
    sd = {}
    for m in LAYER_KINDS:
        o, i = targets[m]
        name = "lora_unet__" + m.replace(".", "_")
        sd[f"{name}.lora_down.weight"] = torch.randn(rank, i, generator=g)
        sd[f"{name}.lora_up.weight"] = torch.randn(o, rank, generator=g)
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    lora = L.parse_lora(sd, {}, targets)
    assert set(lora.layers) == set(LAYER_KINDS)
    merged = CogVideoXTransformer(cfg).eval()
    merged.load_state_dict(ours.state_dict())
    L.merge(merged, lora, strength)
    before, after = ours.state_dict(), merged.state_dict()
    for m in LAYER_KINDS:
        name = "lora_unet__" + m.replace(".", "_")
        expected = before[f"{m}.weight"] + strength * alpha / rank * (
            sd[f"{name}.lora_up.weight"] @ sd[f"{name}.lora_down.weight"]
        )
        assert torch.allclose(after[f"{m}.weight"], expected, atol=1e-6), m
    untouched = [k for k in before if k.removesuffix(".weight") not in LAYER_KINDS]
    assert all(torch.equal(before[k], after[k]) for k in untouched)


def test_alpha_modes(setup):
    _, _, _, targets, tmp = setup
    b = L.load_lora(tmp / "b.safetensors", targets, "one_over_rank")
    assert all(layer.scale == 0.5 for layer in b.layers.values())  # rank 2
    a = L.load_lora(tmp / "a.safetensors", targets, "file")
    assert a.layers["transformer_blocks.0.attn1.to_q"].scale == 2.0
    with pytest.raises(L.LoRAError, match="carries no alpha"):
        L.load_lora(tmp / "b.safetensors", targets, "file")


def test_bad_files(setup, tmp_path, caplog, tiny_transformer_configs):
    _, _, _, targets, tmp = setup
    sd_style = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)}
    save_file(sd_style, tmp_path / "sd.safetensors")
    with pytest.raises(L.LoRAError, match="no key of the file matches the CogVideoX transformer"):
        L.load_lora(tmp_path / "sd.safetensors", targets)

    big = CogVideoXTransformer(tiny_transformer_configs["5b"].__class__(
        **{**tiny_transformer_configs["5b"].to_dict(), "attention_head_dim": 32}))
    with pytest.raises(L.LoRAError, match=r"transformer_blocks\.\d\.attn1\.to_[qkv].*another CogVideoX variant"):
        L.load_lora(tmp / "b.safetensors", L.linear_targets(big))

    data = (tmp / "a.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(L.CogVideoXLoadError, match="truncated"):
        L.load_lora(tmp_path / "cut.safetensors", targets)

    pickle = tmp_path / "evil.pt"
    pickle.write_bytes(b"not read")
    pickle.chmod(0)  # unreadable: refusing must not open it
    with pytest.raises(L.CogVideoXLoadError, match="pickle"):
        L.load_lora(pickle, targets)

    mixed = {**L.load_state_dict_file(tmp / "b.safetensors"), **sd_style,
             "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(1, 1)}
    save_file(mixed, tmp_path / "mixed.safetensors")
    with caplog.at_level("WARNING"):
        lora = L.load_lora(tmp_path / "mixed.safetensors", targets)
    assert len(lora.layers) == 8
    assert "3 LoRA keys match no CogVideoX layer" in caplog.text


def test_patches_reach_compiled_blocks(setup):
    """ModelPatcher puts new weight Parameters on the layers (and puts the old ones back): blocks
    compiled before (dynamo; the eager backend, so no C++ toolchain is needed) compute with them."""
    from cogvideox.compile import compile_blocks

    cfg, _, ours, targets, tmp = setup
    lora = L.load_lora(tmp / "a.safetensors", targets)
    model = CogVideoXTransformer(cfg).eval()
    model.load_state_dict(ours.state_dict())
    merged = CogVideoXTransformer(cfg).eval()
    merged.load_state_dict(ours.state_dict())
    L.merge(merged, lora, 0.7)
    compile_blocks(model, backend="eager")
    base = _run(lambda x, c, t: model(x, t, c), cfg)
    modules = dict(model.named_modules())
    originals = {name: modules[name].weight for name in lora.layers}
    for name, layer in lora.layers.items():  # what comfy.utils.set_attr_param does
        modules[name].weight = torch.nn.Parameter(originals[name] + 0.7 * layer.delta(), requires_grad=False)
    patched = _run(lambda x, c, t: model(x, t, c), cfg)
    for name, weight in originals.items():
        modules[name].weight = weight
    restored = _run(lambda x, c, t: model(x, t, c), cfg)
    expected = _run(lambda x, c, t: merged(x, t, c), cfg)
    assert (patched - expected).abs().max() <= 1e-5
    assert torch.equal(restored, base)


def test_compute_time_deltas_on_low_precision_layers(setup):
    """``WeightDelta`` in the ``weight_function`` of fp8 stored layers (what the node puts
    there through ComfyUI's ``add_weight_wrapper``), in blocks compiled before (dynamo, eager
    backend): the layers compute with the dequantised base + the LoRA's exact difference, the
    stored weights are never touched, and emptying the lists gives the base output bit for bit."""
    from cogvideox import quant
    from cogvideox.compile import compile_blocks

    cfg, _, ours, targets, tmp = setup
    lora = L.load_lora(tmp / "a.safetensors", targets)
    model = CogVideoXTransformer(cfg).eval()
    model.load_state_dict(ours.state_dict())
    quant.store_weights(model, "fp8")
    modules = dict(model.named_modules())
    stored = {n: m for n, m in modules.items() if isinstance(m, quant.LowPrecisionLinear) and n in lora.layers}
    assert stored, "the LoRA targets no stored layer"
    before = {n: (m.weight.clone(), m.upcast_weight()) for n, m in stored.items()}
    compile_blocks(model, backend="eager")
    base = _run(lambda x, c, t: model(x, t, c), cfg)
    for name, layer in stored.items():
        delta = L.WeightDelta(lora.layers[name], 0.7 * lora.layers[name].scale, layer.stored_scale())
        layer.weight_function = [delta]
    patched = _run(lambda x, c, t: model(x, t, c), cfg)
    for name, layer in stored.items():
        assert torch.equal(layer.weight, before[name][0]), name
        expected = before[name][1] + 0.7 * lora.layers[name].delta()
        torch.testing.assert_close(layer.upcast_weight(), expected, rtol=1e-6, atol=1e-6)
    # the same model with float weights: every stored layer dequantised, the deltas merged
    merged = CogVideoXTransformer(cfg).eval()
    merged.load_state_dict(ours.state_dict())
    merged_modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, layer in modules.items():
            if isinstance(layer, quant.LowPrecisionLinear):
                layer.weight_function, functions = [], layer.weight_function
                merged_modules[name].weight.copy_(layer.upcast_weight())
                layer.weight_function = functions
        L.merge(merged, L.LoRA(lora.format, {n: lora.layers[n] for n in stored}), 0.7)
    assert (patched - _run(lambda x, c, t: merged(x, t, c), cfg)).abs().max() <= 1e-5
    for layer in stored.values():
        layer.weight_function = []
    assert torch.equal(_run(lambda x, c, t: model(x, t, c), cfg), base)
