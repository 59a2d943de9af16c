"""Shared tiny fixtures for the core library tests."""

from __future__ import annotations

import pytest
import torch

from cogvideox.configs import TransformerConfig

# Tiny transformer configs: 2 heads x 16 dims (3D RoPE needs a head dim divisible by 16 so each
# axis gets an even share), 2 layers, 16-wide text, a 3 x 4 x 6 training token grid.
_TINY_COMMON = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    time_embed_dim=24,
    text_embed_dim=16,
    num_layers=2,
    sample_height=8,
    sample_width=12,
    sample_frames=9,  # (9 - 1) // 4 + 1 = 3 latent frames
    max_text_seq_length=7,
)
_ROPE = dict(use_rotary_positional_embeddings=True)
_V15 = dict(_ROPE, patch_size_t=2, patch_bias=False, sample_frames=13)  # 4 latent frames

TINY_TRANSFORMER_CONFIGS: dict[str, TransformerConfig] = {
    "2b": TransformerConfig(**_TINY_COMMON),
    "5b": TransformerConfig(**_TINY_COMMON, **_ROPE),
    "5b-i2v": TransformerConfig(
        **_TINY_COMMON, **_ROPE, in_channels=32, use_learned_positional_embeddings=True
    ),
    "1.5-5b": TransformerConfig(**{**_TINY_COMMON, **_V15}),
    "1.5-5b-i2v": TransformerConfig(**{**_TINY_COMMON, **_V15}, in_channels=32, ofs_embed_dim=24),
    # CogVideoX-Fun: InP (noisy 16 + mask 1 + masked video 16) and Control (noisy 16 + control 16)
    "fun-2b-inp": TransformerConfig(**_TINY_COMMON, in_channels=33),
    "fun-5b-inp": TransformerConfig(**_TINY_COMMON, **_ROPE, in_channels=33),
    "fun-2b-control": TransformerConfig(**_TINY_COMMON, in_channels=32),
    "fun-5b-control": TransformerConfig(**_TINY_COMMON, **_ROPE, in_channels=32),
    "fun-1.5-5b-inp": TransformerConfig(**{**_TINY_COMMON, **_V15}, in_channels=33),
}


@pytest.fixture(scope="session")
def tiny_transformer_configs() -> dict[str, TransformerConfig]:
    """Tiny configs keyed like ``configs.VARIANTS``."""
    return dict(TINY_TRANSFORMER_CONFIGS)


def randomize_module(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter and persistent buffer a random value (upstream init zeroes some)."""
    gains = {
        id(m.weight) for m in module.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None
    }
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * std
            if id(tensor) in gains:
                noise = noise + 1.0  # layer-norm gains around 1 keep activations O(1)
            tensor.copy_(noise.to(tensor.dtype))
    return module


@pytest.fixture(scope="session")
def randomize():
    return randomize_module
