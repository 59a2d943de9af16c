"""CogVideoXVAE against diffusers' AutoencoderKLCogVideoX (the oracle) on a tiny random VAE.

Every parameter (GroupNorm affines included) is re-drawn from a seeded normal, so no
zero-initialised layer can hide a wiring mistake.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cogvideox.configs import VAEConfig
from cogvideox.vae import CogVideoXVAE, TileConfig
from cogvideox.vae_blocks import set_stream_chunk_bytes

diffusers = pytest.importorskip("diffusers")

TOL = 1e-4
TINY = dict(
    block_out_channels=(8, 16, 16, 16),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=4,
    sample_height=48,
    sample_width=48,
)


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    ref = diffusers.AutoencoderKLCogVideoX(**TINY).eval()
    randomize_(ref)
    ours = CogVideoXVAE(VAEConfig(**TINY)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(params=[None, 1], ids=["chunked", "frame-by-frame"])
def stream_bytes(request):
    """Run the lean path with the default chunk budget and with one frame per chunk."""
    if request.param is None:
        yield
        return
    old = set_stream_chunk_bytes(request.param)
    yield
    set_stream_chunk_bytes(old)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_state_dict_names_and_meta_construction(models):
    ref, ours = models
    assert list(ref.state_dict()) == list(ours.state_dict())
    for k, v in ref.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k
    with torch.device("meta"):
        meta = CogVideoXVAE(VAEConfig(**TINY))
    meta.load_state_dict(ref.state_dict(), strict=True, assign=True)
    assert all(p.device.type == "cpu" for p in meta.parameters())


@pytest.mark.parametrize("frames,batch", [(17, 8), (17, None), (9, 4)])
def test_encode_moments(models, stream_bytes, frames, batch):
    ref, ours = models
    x = torch.randn(1, 3, frames, 48, 48, generator=gen(1))
    ref.num_sample_frames_batch_size = batch or 1000
    try:
        with torch.no_grad():
            dist = ref.encode(x).latent_dist
    finally:
        ref.num_sample_frames_batch_size = 8
    mean, logvar = ours.encode_moments(x, frame_batch=batch)
    assert mean.shape == (1, 4, (frames - 1) // 4 + 1, 6, 6)
    assert maxdiff(mean, dist.mean) <= TOL
    assert maxdiff(logvar, dist.logvar) <= TOL
    assert maxdiff(ours.encode(x, frame_batch=batch), dist.mean) <= TOL


def test_encode_sample_matches_generator(models):
    ref, ours = models
    x = torch.randn(2, 3, 9, 48, 48, generator=gen(2))
    with torch.no_grad():
        expected = ref.encode(x).latent_dist.sample(generator=gen(7))
    got = ours.encode(x, sample=True, generator=gen(7))
    assert maxdiff(got, expected) <= TOL
    assert maxdiff(got, ours.encode(x)) > 1e-3  # the sample is not the mean


@pytest.mark.parametrize("latents,batch", [(5, 2), (7, 2), (5, None), (7, 3)])
def test_decode(models, stream_bytes, latents, batch):
    ref, ours = models
    z = torch.randn(2, 4, latents, 6, 6, generator=gen(3))
    ref.num_latent_frames_batch_size = batch or 1000
    try:
        with torch.no_grad():
            expected = ref.decode(z).sample
    finally:
        ref.num_latent_frames_batch_size = 2
    got = ours.decode(z, frame_batch=batch)
    assert got.shape == (2, 3, 4 * (latents - 1) + 1, 48, 48)
    assert maxdiff(got, expected) <= TOL


def test_frame_batch_size_is_part_of_the_numerics(models):
    """GroupNorm statistics are per frame batch (in the reference too): batched != whole."""
    _, ours = models
    z = torch.randn(1, 4, 5, 6, 6, generator=gen(4))
    assert maxdiff(ours.decode(z, frame_batch=2), ours.decode(z, frame_batch=None)) > 1e-2


# (pixel size, tile size) where diffusers' tiling is self-consistent (stride, crop and blend agree
# and no tile lies inside the one before it): there our tiling is exactly the reference's.
ENCODE_CASES = [((96, 80), (48, 40))]
DECODE_CASES = [((12, 10), (48, 40))]


def tiling_happened(tiled: torch.Tensor, untiled: torch.Tensor) -> bool:
    return tiled.shape != untiled.shape or maxdiff(tiled, untiled) > 1e-3


@pytest.mark.parametrize("size,tile_hw", ENCODE_CASES)
def test_tiled_encode(models, size, tile_hw):
    ref, ours = models
    x = torch.randn(1, 3, 9, *size, generator=gen(5))
    ref.enable_tiling(tile_sample_min_height=tile_hw[0], tile_sample_min_width=tile_hw[1])
    try:
        with torch.no_grad():
            expected = ref.encode(x).latent_dist.mean
    finally:
        ref.disable_tiling()
    got = ours.encode(x, tile=TileConfig(*tile_hw))
    assert maxdiff(got, expected) <= TOL
    assert tiling_happened(got, ours.encode(x))


@pytest.mark.parametrize("size,tile_hw", DECODE_CASES)
def test_tiled_decode(models, size, tile_hw):
    ref, ours = models
    z = torch.randn(1, 4, 5, *size, generator=gen(6))
    ref.enable_tiling(tile_sample_min_height=tile_hw[0], tile_sample_min_width=tile_hw[1])
    try:
        with torch.no_grad():
            expected = ref.decode(z).sample
    finally:
        ref.disable_tiling()
    got = ours.decode(z, tile=TileConfig(*tile_hw))
    assert maxdiff(got, expected) <= TOL
    assert tiling_happened(got, ours.decode(z))


def test_tiled_decode_frame_by_frame_and_consistent_size(models, stream_bytes):
    ref, ours = models
    z = torch.randn(1, 4, 5, 12, 10, generator=gen(13))
    ref.enable_tiling(tile_sample_min_height=48, tile_sample_min_width=40)
    try:
        with torch.no_grad():
            expected = ref.decode(z).sample
    finally:
        ref.disable_tiling()
    got = ours.decode(z, tile=TileConfig(48, 40))
    untiled = ours.decode(z)
    assert got.shape == untiled.shape == (1, 3, 17, 96, 80)
    assert maxdiff(got, expected) <= TOL
    assert maxdiff(got, untiled) > 1e-3


def test_tiling_defaults_follow_enable_tiling(models):
    """``tile=True`` is diffusers' ``enable_tiling()``: half the sample size, overlaps 1/6 and 1/5."""
    _, ours = models
    assert TileConfig.resolve(True, ours.config) == TileConfig(24, 24, 1 / 6, 1 / 5)
    z = torch.randn(1, 4, 3, 9, 9, generator=gen(8))
    assert torch.equal(ours.decode(z, tile=True), ours.decode(z, tile=TileConfig(24, 24, 1 / 6, 1 / 5)))


@pytest.mark.parametrize("tile_hw", [(24, 24), (32, 48), (40, 56), (64, 40)])
def test_any_tile_size_keeps_the_untiled_size(models, tile_hw):
    """Tile sizes that do not divide evenly: diffusers' output grows at every seam (mixing a
    latent stride with pixel crops; 64x96 px tiles turn 120x176 into 132x186), ours keeps the
    untiled size in both directions."""
    _, ours = models
    z = torch.randn(1, 4, 3, 11, 13, generator=gen(14))
    tile = TileConfig(*tile_hw)
    decoded = ours.decode(z, tile=tile)
    assert decoded.shape == ours.decode(z).shape == (1, 3, 9, 88, 104)
    x = torch.randn(1, 3, 9, 88, 104, generator=gen(15))
    assert ours.encode(x, tile=tile).shape == ours.encode(x).shape


def test_small_input_is_not_tiled(models):
    _, ours = models
    z = torch.randn(1, 4, 3, 3, 3, generator=gen(9))
    assert torch.equal(ours.decode(z, tile=TileConfig(24, 24)), ours.decode(z))


def test_training_forward_and_gradients(models):
    ref, ours = models
    x = torch.randn(1, 3, 9, 16, 16, generator=gen(10))
    ref.zero_grad()
    ours.zero_grad()
    assert not ours(x).requires_grad  # an eval() model takes the lean no-grad path
    ours.train()
    try:
        expected = ref(x).sample
        got = ours(x)
    finally:
        ours.eval()
    assert got.requires_grad
    assert maxdiff(got, expected.detach()) <= TOL
    expected.square().mean().backward()
    got.square().mean().backward()
    pairs = list(zip(ref.named_parameters(), ours.named_parameters(), strict=True))
    for (name, p_ref), (_, p_ours) in pairs:
        assert p_ours.grad is not None, name
        assert maxdiff(p_ours.grad, p_ref.grad) <= TOL, name
    ref.zero_grad()
    ours.zero_grad()


def test_lean_path_equals_autograd_path(models):
    _, ours = models
    z = torch.randn(1, 4, 5, 6, 6, generator=gen(11))
    with torch.no_grad():
        lean = ours.decode(z)
    z_grad = z.clone().requires_grad_(True)
    plain = ours.decode(z_grad)
    assert plain.requires_grad
    assert maxdiff(lean, plain.detach()) <= TOL


def test_bfloat16_stays_close(models):
    _, ours = models
    z = torch.randn(1, 4, 3, 6, 6, generator=gen(12))
    want = ours.decode(z)
    half = CogVideoXVAE(ours.config).to(torch.bfloat16).eval()
    half.load_state_dict(ours.state_dict())
    got = half.decode(z.bfloat16())
    assert got.dtype == torch.bfloat16
    rel = (got.float() - want).abs().max() / want.abs().max()
    assert rel < 0.05


class _LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages (what a GPU caching allocator calls allocated)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage.data_ptr() not in self.live and storage.nbytes() > 0:
                    self.live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def _peak_bytes(fn) -> int:
    tracker = _LiveTensorBytes()
    with torch.no_grad(), tracker:
        fn()
    return tracker.peak


def test_decode_peak_memory_below_reference(models):
    """Live-tensor peak: untiled <= 1.0x and tiled <= 0.5x the reference at the same tile size."""
    ref, ours = models
    z = torch.randn(1, 4, 5, 8, 12, generator=gen(14))
    old = set_stream_chunk_bytes(4096)  # frame-by-frame streaming, as full-size frames stream
    try:
        ours_whole = _peak_bytes(lambda: ours.decode(z))
        ours_tiled = _peak_bytes(lambda: ours.decode(z, tile=TileConfig(32, 48)))
    finally:
        set_stream_chunk_bytes(old)
    ref_whole = _peak_bytes(lambda: ref.decode(z))
    ref.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=48)
    try:
        ref_tiled = _peak_bytes(lambda: ref.decode(z))
    finally:
        ref.disable_tiling()
    assert ours_whole <= 1.0 * ref_whole, (ours_whole, ref_whole)
    assert ours_tiled <= 0.5 * ref_tiled, (ours_tiled, ref_tiled)


def test_auto_tile_fits_budget():
    from cogvideox.vae_tiling import auto_tile

    cfg = VAEConfig()
    assert auto_tile(cfg, 480, 720, budget_bytes=2**40) is None
    small = auto_tile(cfg, 480, 720, budget_bytes=2 * 2**30)
    smaller = auto_tile(cfg, 480, 720, budget_bytes=2**30)
    assert small is not None and smaller is not None
    assert small.tile_sample_min_height % 8 == 0 and small.tile_sample_min_width % 8 == 0
    assert smaller.tile_sample_min_height * smaller.tile_sample_min_width < (
        small.tile_sample_min_height * small.tile_sample_min_width
    )
    assert small.tile_sample_min_height < 480 and small.tile_sample_min_width < 720
