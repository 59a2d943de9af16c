"""Causality of CogVideoXVAE across frame batches, and batched == streamed prefixes.

Inside one frame batch the frames share GroupNorm statistics (as in the reference), so
causality holds at frame-batch granularity: a frame can only influence its own batch and
later ones. These tests pin both halves of that statement.
"""

from __future__ import annotations

import math

import pytest
import torch

from cogvideox.configs import VAEConfig
from cogvideox.vae import CogVideoXVAE, frame_spans

CFG = VAEConfig(
    block_out_channels=(8, 16, 16),
    down_block_types=("CogVideoXDownBlock3D",) * 3,
    up_block_types=("CogVideoXUpBlock3D",) * 3,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=4,
    sample_height=32,
    sample_width=32,
)


@pytest.fixture(scope="module")
def vae() -> CogVideoXVAE:
    torch.set_num_threads(1)
    model = CogVideoXVAE(CFG).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def frame_diffs(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return (a - b).abs().amax(dim=(0, 1, 3, 4)).tolist()


def test_frame_spans_follow_the_reference_batching():
    assert frame_spans(17, 8) == [(0, 9), (9, 17)]
    assert frame_spans(13, 2) == [(0, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13)]
    assert frame_spans(12, 2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]
    assert frame_spans(5, 8) == [(0, 5)]
    assert frame_spans(1, 2) == [(0, 1)]
    assert frame_spans(9, None) == [(0, 9)]


def test_encode_later_frame_changes_no_earlier_latent(vae):
    # 17 frames in batches (0..8), (9..16) -> latents (0..2), (3, 4).
    x = rand(1, 3, 17, 16, 16, seed=1)
    x2 = x.clone()
    x2[:, :, 13] += 1.0
    d = frame_diffs(vae.encode(x), vae.encode(x2))
    assert max(d[:3]) == 0.0
    assert min(d[3:]) > 1e-4


def test_decode_later_latent_changes_no_earlier_frame(vae):
    # 7 latents in batches (0, 1, 2), (3, 4), (5, 6) -> frames 0..8, 9..16, 17..24.
    z = rand(1, 4, 7, 4, 4, seed=2)
    z2 = z.clone()
    z2[:, :, 3] += 1.0
    d = frame_diffs(vae.decode(z), vae.decode(z2))
    assert len(d) == 25
    assert max(d[:9]) == 0.0
    assert min(d[9:]) > 1e-4  # the change reaches its batch and, through the cache, later ones


def test_frames_inside_one_batch_share_statistics(vae):
    z = rand(1, 4, 3, 4, 4, seed=3)
    z2 = z.clone()
    z2[:, :, 2] += 1.0
    d = frame_diffs(vae.decode(z, frame_batch=None), vae.decode(z2, frame_batch=None))
    assert d[0] > 1e-4  # GroupNorm over the batch's frames: not causal inside a batch


@pytest.mark.parametrize("keep", [3, 5])
def test_decoding_a_prefix_gives_the_same_first_frames(vae, keep):
    """Batched decoding with the cache is a stream: a prefix decodes to the same frames."""
    z = rand(1, 4, 7, 4, 4, seed=4)
    full = vae.decode(z)
    prefix = vae.decode(z[:, :, :keep])
    frames = 4 * (keep - 1) + 1
    assert prefix.shape[2] == frames
    assert torch.equal(prefix, full[:, :, :frames])


def test_encoding_a_prefix_gives_the_same_first_latents(vae):
    x = rand(1, 3, 25, 16, 16, seed=5)  # batches (0..8), (9..16), (17..24)
    full = vae.encode(x)
    prefix = vae.encode(x[:, :, :17])
    assert prefix.shape[2] == 5
    assert torch.equal(prefix, full[:, :, :5])


def test_frame_batched_decode_equals_manual_stream(vae):
    """The public batched decode equals running the decoder batch by batch with one cache."""
    z = rand(1, 4, 5, 4, 4, seed=6)
    cache: dict = {}
    with torch.no_grad():
        parts = [vae.decoder(z[:, :, a:b], cache) for a, b in frame_spans(5, 2)]
    assert torch.equal(vae.decode(z), torch.cat(parts, dim=2))


def test_batch_items_are_independent(vae):
    """Batch items are independent: decoding a batch of two equals decoding each alone."""
    z = rand(2, 4, 5, 4, 4, seed=7)
    both = vae.decode(z)
    assert (both[0] - vae.decode(z[:1])[0]).abs().max() < 1e-4
    assert (both[1] - vae.decode(z[1:])[0]).abs().max() < 1e-4


@pytest.mark.parametrize("grad", [False, True])
def test_conv3d_through_onednn_matches_torch(grad):
    """The VAE's Conv3d (oneDNN directly for thin float32 CPU chunks, which PyTorch would send to
    its slow generic kernel) gives torch's conv3d result, with and without autograd."""
    from cogvideox.vae_blocks import Conv3d

    gen = torch.Generator().manual_seed(0)
    conv = Conv3d(32, 16, 3, padding=(0, 1, 1))
    x = torch.randn(1, 32, 3, 40, 24, generator=gen)  # B*C*T*H = 3840: PyTorch's generic-kernel case
    with torch.set_grad_enabled(grad):
        got = conv(x)
    with torch.no_grad():
        want = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=(0, 1, 1))
    assert got.shape == want.shape and got.requires_grad == grad
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)


class _Stop(Exception):
    pass


def test_a_stopped_decode_leaves_no_tensors_in_its_frame(vae):
    """Cancel raises from the progress callback; whoever keeps that traceback (the host's error
    handling) keeps the decode's frame, which must not pin the causal cache or the partial output."""

    def stop_after_the_first_batch(done: int, total: int) -> None:
        if done == 1 and total > 1:
            raise _Stop

    z = rand(1, vae.config.latent_channels, 5, 4, 4, seed=3)
    with pytest.raises(_Stop) as info, torch.no_grad():
        vae.decode_tile(z, 2, stop_after_the_first_batch)
    tb, frames = info.value.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    batched = [f for f in frames if f.f_code.co_name == "_run_batched"]
    assert batched, [f.f_code.co_name for f in frames]
    held = [(name, value) for name, value in batched[0].f_locals.items() if isinstance(value, torch.Tensor)]
    assert [name for name, _ in held] == ["x"], held  # only the caller's input
    assert batched[0].f_locals["cache"] == {}
