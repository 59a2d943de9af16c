"""Float32 linear layers on CPU through oneDNN, written into a given output.

PyTorch sends a float32 ``addmm`` on CPU to MKL's sgemm. oneDNN (bundled with PyTorch's CPU
builds, reached through the ``mkldnn::_linear_pointwise`` op that inductor's CPU backend uses)
runs the transformer's matmul shapes faster on the AMD EPYC (Zen 4) machine this pack is
benchmarked on: 200-206 against 160-170 GFLOP/s for 512-row blocks of the 5B-shaped feed-forward
on 2 cores, and it applies the feed-forward's GELU to each block while it is still in cache
(6.2 against 9.3 ms for a 512 x 512 -> 2048 block with its GELU). Same float32 precision, a
different summation order (differences of ~1e-6 relative, as between any two BLAS libraries).

``linear`` and ``linear_into`` fall back to ``addmm`` (and the activation module) wherever
oneDNN is not used: other devices and dtypes, autograd, ``torch.compile`` tracing, builds
without oneDNN, CPUs other than x86-64, and small products.
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F
from torch import nn

from .compile import is_compiling

# Rows per oneDNN call: its output block (rows x out features) stays in cache until it is copied
# into ``out``; the matmul itself is as fast as one call over all rows (measured 512-2048).
ROWS_PER_CALL = 1024
# Products with fewer multiply-adds stay on addmm: there oneDNN's per-call cost made it 3-5%
# slower (548 x 64 x 192: 6.7M); from 36M it was 3-5% faster, up to 20% at 537M (measured).
MIN_MACS = 1 << 24


def _onednn_op():
    # Measured on x86-64 only; elsewhere (Arm builds route oneDNN through other backends) addmm.
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # a build without the op
        return None


_ONEDNN_LINEAR = _onednn_op()


def _fused_activation(act: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN's name and algorithm for ``act`` (None: no activation), or None when it has none."""
    if act is None:
        return "none", ""
    if type(act) is nn.GELU:
        return "gelu", act.approximate  # "tanh" or "none" (exact, erf)
    return None


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear`` and ``linear_into`` compute this product with oneDNN."""
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.is_contiguous()
        and weight.is_contiguous()
        and x.shape[0] * weight.shape[0] * weight.shape[1] >= MIN_MACS
        and not torch.is_grad_enabled()
        and not is_compiling()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: nn.Module | None = None):
    """``act(x[rows, in] @ weight.T + bias)`` -> a new ``[rows, out]`` tensor (one oneDNN call when used)."""
    fused = _fused_activation(act)
    if fused is not None and uses_onednn(x, weight):
        return _ONEDNN_LINEAR(x, weight, bias, fused[0], [], fused[1])
    y = F.linear(x, weight, bias)
    return y if act is None else act(y)


def linear_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``out[rows, out] = x[rows, in] @ weight.T + bias``; returns ``out``."""
    if not uses_onednn(x, weight):
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)
    for a in range(0, x.shape[0], ROWS_PER_CALL):
        out[a : a + ROWS_PER_CALL] = _ONEDNN_LINEAR(x[a : a + ROWS_PER_CALL], weight, bias, "none", [], "")
    return out
