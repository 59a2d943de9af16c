"""Buffer reuse between transformer blocks (``cogvideox.scratch``) and the oneDNN linear path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cogvideox.linear import linear, linear_into, uses_onednn
from cogvideox.scratch import NO_SCRATCH, Scratch
from cogvideox.transformer import CogVideoXTransformer

torch.set_num_threads(1)


class CountingScratch(Scratch):
    """A Scratch that counts the buffers it had to allocate."""

    def __init__(self):
        super().__init__()
        self.allocated = 0

    def empty(self, *shape, dtype, device):
        before = self.held_bytes()
        out = super().empty(*shape, dtype=dtype, device=device)
        self.allocated += self.held_bytes() == before
        return out


def test_scratch_hands_back_whole_buffers_once_and_caps_what_it_keeps():
    s = Scratch(keep=2)
    a = s.empty(4, 6, dtype=torch.float32, device="cpu")
    s.give(a)
    s.give(a)  # twice: kept once
    assert s.held_bytes() == a.nbytes
    b = s.empty(3, 8, dtype=torch.float32, device="cpu")  # same size, other shape: the same memory
    assert b.data_ptr() == a.data_ptr() and b.shape == (3, 8)
    assert s.held_bytes() == 0
    assert s.empty(3, 8, dtype=torch.float64, device="cpu").data_ptr() != a.data_ptr()  # dtype is part of the key
    s.give(torch.zeros(10, 8)[2:5])  # a view of a bigger buffer: ignored
    s.give(torch.zeros(8, 3).t())  # not contiguous: ignored
    assert s.held_bytes() == 0
    for _ in range(3):
        s.give(torch.zeros(24))
    assert s.held_bytes() == 2 * 24 * 4  # at most `keep` per size
    NO_SCRATCH.give(torch.zeros(24))
    assert NO_SCRATCH.held_bytes() == 0


def test_blocks_reuse_buffers_and_the_numbers_do_not_change(tiny_transformer_configs, randomize):
    """After the first block a block allocates only the attention output; with and without
    reuse the blocks give bit-identical results."""
    cfg = tiny_transformer_configs["5b"]
    model = randomize(CogVideoXTransformer(cfg).eval(), seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 3, 8, 12, generator=g)
    ctx = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    with torch.no_grad():
        tokens = model.embed(x, torch.tensor([600, 600]), ctx)
        text_len = tokens.text.shape[1]
        start = torch.cat([tokens.text, tokens.video], dim=1)
        plain = start.clone()
        for i in range(cfg.num_layers):
            plain = model.block_forward(i, plain, tokens.temb, tokens.rope, text_len, NO_SCRATCH)
        scratch = CountingScratch()
        reused = start.clone()
        per_block = []
        for i in range(cfg.num_layers):
            before = scratch.allocated
            reused = model.block_forward(i, reused, tokens.temb, tokens.rope, text_len, scratch)
            per_block.append(scratch.allocated - before)
        whole = model(x, torch.tensor([600, 600]), ctx)
    assert torch.equal(plain, reused)
    assert per_block[0] >= 4 and all(n == 0 for n in per_block[1:]), per_block
    assert scratch.held_bytes() > 0
    video = model.final(reused[:, text_len:], tokens.temb, tokens.grid)
    assert torch.equal(video, whole)  # forward() itself uses a Scratch


@pytest.mark.parametrize(
    "act", [None, nn.GELU(approximate="tanh"), nn.GELU(), nn.SiLU()], ids=["none", "gelu-tanh", "gelu", "silu"]
)
def test_linear_matches_f_linear(act):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1100, 256, generator=g)  # more rows than one oneDNN call
    w = torch.randn(96, 256, generator=g) * 0.1
    b = torch.randn(96, generator=g)
    expected = F.linear(x, w, b)
    if act is not None:
        expected = act(expected)
    with torch.no_grad():
        assert uses_onednn(x, w) or not torch.backends.mkldnn.is_available()
        got = linear(x, w, b, act)
        into = linear_into(torch.empty(1100, 96), x, w, b)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(into, F.linear(x, w, b), atol=2e-5, rtol=1e-5)
    with torch.enable_grad():  # autograd: the plain path, exactly F.linear
        assert not uses_onednn(x, w)
        assert torch.equal(linear_into(torch.empty(1100, 96), x, w, b), F.linear(x, w, b))


def test_onednn_is_used_for_float32_on_cpu_when_present():
    x, w = torch.zeros(4096, 64), torch.zeros(64, 64)  # 16.8M multiply-adds: the smallest oneDNN product
    with torch.no_grad():
        if not torch.backends.mkldnn.is_available():
            pytest.skip("this PyTorch build has no oneDNN")
        assert uses_onednn(x, w)
        assert not uses_onednn(x.bfloat16(), w.bfloat16())
        assert not uses_onednn(x.to("meta"), w.to("meta"))
        assert not uses_onednn(x, torch.zeros(64, 64).t())  # a transposed weight: the plain path
        assert not uses_onednn(x[:4095], w)  # too small: the plain path
