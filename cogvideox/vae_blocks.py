"""Building blocks of the CogVideoX 3D causal VAE.

Every block has two execution paths over the same parameters:

- the autograd path (``torch.is_grad_enabled()``): plain functional ops, used for training;
- the lean path (no grad): each ``norm -> activation -> causal conv`` is streamed over small
  chunks of frames straight into a preallocated output, so the normalised / activated
  tensor is never materialised at full size, and where the channel count allows, the conv
  writes its output over its own input (chunks in descending time order keep the frames a
  causal conv still needs intact).

The causal conv cache is a plain dict keyed by the conv module: ``cache[conv]`` holds the
last ``kernel_t - 1`` frames of that conv's padded input from the previous frame batch.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .ops import DEFAULT_OPERATIONS, resident, weight_bias

Cache = dict[nn.Module, torch.Tensor]
FrameFn = Callable[[int, int], torch.Tensor]

# Upper bound on the bytes of one streamed chunk (its input frames plus its output frames).
STREAM_CHUNK_BYTES = 48 * 2**20


def activation(name: str, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    if name in ("silu", "swish"):
        return F.silu(x, inplace=inplace)
    if name == "relu":
        return F.relu(x, inplace=inplace)
    if name == "mish":
        return F.mish(x, inplace=inplace)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"unsupported activation {name!r}")


_ONEDNN = torch.backends.mkldnn.is_available()


def _onednn_conv_applies(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    return (
        _ONEDNN
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
        and conv.padding_mode == "zeros"
        and not torch.is_grad_enabled()
        and resident(conv)
    )


@functools.cache
def fast_conv3d(base: type[nn.Conv3d]) -> type[nn.Conv3d]:
    """A subclass of ``base`` (``nn.Conv3d`` or an ``operations.Conv3d``) that runs float32 CPU
    inference straight through oneDNN.

    PyTorch sends a float32 CPU conv3d whose ``B*C*T*H`` is at most 20480 to its generic im2col
    kernel (a heuristic meant for tiny inputs). The chunks streamed here are thin in time, so the
    wide top of the decoder fell into it: 405 ms against 51 ms through oneDNN for 32 channels,
    3 frames, 128x192 px on one thread (measured); the results agree to float32 rounding.
    Training (autograd), other devices and dtypes, and layers with something to cast or patch
    (``cogvideox.ops.resident``) take ``base``'s own forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_conv_applies(self, x):
            return torch.ops.aten.mkldnn_convolution(
                x.contiguous(), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return base.forward(self, x)

    name = "Conv3d" if base is nn.Conv3d else f"Fast{base.__qualname__.replace('.', '')}"
    return type(name, (base,), {"forward": forward, "__doc__": fast_conv3d.__doc__, "__module__": __name__})


Conv3d = fast_conv3d(nn.Conv3d)


def set_stream_chunk_bytes(n: int) -> int:
    """Set the streamed chunk budget in bytes (1 streams frame by frame); returns the old one."""
    global STREAM_CHUNK_BYTES
    old, STREAM_CHUNK_BYTES = STREAM_CHUNK_BYTES, int(n)
    return old


@contextlib.contextmanager
def stream_chunk_budget(n: int) -> Iterator[None]:
    """Use a streamed chunk budget of ``n`` bytes inside the ``with`` block (tiled passes use 1)."""
    old = set_stream_chunk_bytes(n)
    try:
        yield
    finally:
        set_stream_chunk_bytes(old)


def _chunk_frames(bytes_per_frame: int) -> int:
    return max(1, STREAM_CHUNK_BYTES // max(bytes_per_frame, 1))


def _frame_bytes(x: torch.Tensor) -> int:
    b, c, _, h, w = x.shape
    return b * c * h * w * x.element_size()


def encoded_frames(n: int, levels: int) -> int:
    """Frames left after ``levels`` temporal halvings (a lone odd first frame is kept)."""
    for _ in range(levels):
        n = 1 + (n - 1) // 2 if n % 2 == 1 else n // 2
    return n


def decoded_frames(n: int, levels: int) -> int:
    """Frames after ``levels`` temporal doublings (an odd first frame is not doubled)."""
    for _ in range(levels):
        n = 1 + 2 * (n - 1) if n % 2 == 1 else 2 * n
    return n


def nearest_time_index(t_in: int, t_out: int) -> list[int]:
    """Source frame of each output frame for the spatial norm's nearest resize of ``zq``.

    Odd frame counts (> 1) keep the first frame on its own and resize the rest.
    """
    if t_out > 1 and t_out % 2 == 1:
        return [0] + [1 + (j * (t_in - 1)) // (t_out - 1) for j in range(t_out - 1)]
    return [(j * t_in) // t_out for j in range(t_out)]


class CausalConv3d(nn.Module):
    """Conv3d padded causally in time (first frame replicated) and symmetrically in space."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, operations=None):
        super().__init__()
        self.context = kernel_size - 1
        pad = kernel_size // 2
        conv3d = fast_conv3d((operations or DEFAULT_OPERATIONS).Conv3d)
        self.conv = conv3d(in_channels, out_channels, kernel_size, padding=(0, pad, pad))

    def _prefix(self, first: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        prev = cache.get(self) if cache is not None else None
        if prev is not None:
            return prev
        return first.expand(-1, -1, self.context, -1, -1)  # [B, C, 1, H, W] -> [B, C, p, H, W]

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if self.context == 0:
            return self.conv(x)
        padded = torch.cat([self._prefix(x[:, :, :1], cache), x], dim=2)  # [B, C, p + T, H, W]
        if cache is not None:
            cache[self] = padded[:, :, -self.context :].clone()
        return self.conv(padded)

    def stream(
        self,
        frames: FrameFn,
        n: int,
        out: torch.Tensor,
        cache: Cache | None = None,
        overwrite_source: bool = False,
    ) -> torch.Tensor:
        """Convolve ``n`` input frames given by ``frames(a, b)`` into ``out`` chunk by chunk.

        With ``overwrite_source`` (``out`` is the tensor ``frames`` reads from) the chunks run
        from the last to the first, so every chunk reads frames that are still unwritten.
        """
        p = self.context
        prefix = tail = None
        if p:
            prefix = self._prefix(frames(0, 1).clone(), cache)
            if cache is not None:
                if n >= p:
                    tail = frames(n - p, n).clone()
                else:
                    tail = torch.cat([prefix, frames(0, n)], dim=2)[:, :, -p:].clone()  # [B, C, p, H, W]
        in_ch = self.conv.in_channels
        per_frame = _frame_bytes(out) * (1 + in_ch / out.shape[1])
        step = _chunk_frames(int(per_frame))
        starts = list(range(0, n, step))
        if overwrite_source:
            starts.reverse()
        for a in starts:
            b = min(a + step, n)
            src = frames(max(a - p, 0), b)
            if a < p:
                src = torch.cat([prefix[:, :, a:], src], dim=2)  # [B, C, b - a + p, H, W]
            out[:, :, a:b] = self.conv(src)
            del src
        if tail is not None:
            cache[self] = tail
        return out


def _group_moments(x: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean and 1/std ``[B, G]`` float32 of ``x[B, C, ...]``, as GroupNorm computes them.

    Uses the fused GroupNorm kernel on runs of whole groups (a channel slice of one sample is
    contiguous), bounded to half the stream chunk so the normalised by-product stays small; it
    is several times faster than a generic ``var_mean`` reduction on CPU.
    """
    b, c = x.shape[:2]
    per_channel = x[0, 0].numel()
    cg = c // groups
    group_bytes = cg * per_channel * 4
    run = max(1, min(groups, (STREAM_CHUNK_BYTES // 2) // max(group_bytes, 1)))
    means, rstds = [], []
    for i in range(b):
        for g0 in range(0, groups, run):
            g1 = min(groups, g0 + run)
            part = x[i : i + 1, g0 * cg : g1 * cg]  # [1, (g1-g0)*C/G, ...] contiguous
            if part.dtype not in (torch.float32, torch.float64) or not part.is_contiguous():
                part = part.float().contiguous()
            _, mean, rstd = torch.native_group_norm(part, None, None, 1, part.shape[1], per_channel, g1 - g0, eps)
            means.append(mean.float())
            rstds.append(rstd.float())
            del part
    mean = torch.cat(means, dim=1).view(b, groups)  # [B, G]
    rstd = torch.cat(rstds, dim=1).view(b, groups)  # [B, G]
    return mean, rstd


def group_affine(x: torch.Tensor, norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``scale, shift`` of shape [B, C, 1, 1, 1] with ``norm(x) == x * scale + shift``."""
    b, c = x.shape[:2]
    g = norm.num_groups
    mean, rstd = _group_moments(x, g, norm.eps)
    rstd = rstd.repeat_interleave(c // g, dim=1)  # [B, G] -> [B, C]
    mean = mean.repeat_interleave(c // g, dim=1)  # [B, G] -> [B, C]
    weight, bias = weight_bias(norm, x.device, torch.float32)  # cast and patched as its forward would
    scale = rstd if weight is None else rstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return scale.view(b, c, 1, 1, 1), shift.view(b, c, 1, 1, 1)


class SpatialNorm3D(nn.Module):
    """GroupNorm modulated by the latent ``zq`` (1x1x1 convs, resized nearest to ``f``)."""

    def __init__(self, f_channels: int, zq_channels: int, groups: int, operations=None):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.norm_layer = ops.GroupNorm(groups, f_channels, eps=1e-6, affine=True)
        self.conv_y = CausalConv3d(zq_channels, f_channels, kernel_size=1, operations=ops)
        self.conv_b = CausalConv3d(zq_channels, f_channels, kernel_size=1, operations=ops)

    def modulation(self, f_frames: int, zq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``conv_y(zq)`` and ``conv_b(zq)`` at latent resolution, frames already mapped to f's."""
        index = torch.tensor(nearest_time_index(zq.shape[2], f_frames), device=zq.device)
        zq = zq.index_select(2, index)  # [B, Cz, Tz, h, w] -> [B, Cz, Tf, h, w]
        # A 1x1x1 conv commutes with a nearest resize, so run it at the small resolution.
        return self.conv_y.conv(zq), self.conv_b.conv(zq)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        y, b = self.modulation(f.shape[2], zq)
        y = F.interpolate(y, size=f.shape[-3:])  # [B, C, Tf, h, w] -> [B, C, Tf, H, W]
        b = F.interpolate(b, size=f.shape[-3:])  # [B, C, Tf, h, w] -> [B, C, Tf, H, W]
        return self.norm_layer(f) * y + b


def _modulate_(h: torch.Tensor, y: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """In place ``h * up(y) + up(b)`` with ``up`` a nearest spatial resize of y, b to h."""
    bsz, c, t, hh, ww = h.shape
    sh, sw = y.shape[-2:]
    if hh % sh == 0 and ww % sw == 0:
        rh, rw = hh // sh, ww // sw
        h7 = h.view(bsz, c, t, sh, rh, sw, rw)  # [B, C, t, H, W] -> [B, C, t, h, rh, w, rw]
        h7.mul_(y[:, :, :, :, None, :, None]).add_(b[:, :, :, :, None, :, None])
        return h
    h.mul_(F.interpolate(y, size=(t, hh, ww))).add_(F.interpolate(b, size=(t, hh, ww)))
    return h


def normalized_frames(
    x: torch.Tensor,
    norm: nn.Module,
    act: str,
    zq: torch.Tensor | None = None,
) -> FrameFn:
    """``frames(a, b) = act(norm(x))[:, :, a:b]`` computed on demand from global statistics."""
    if isinstance(norm, SpatialNorm3D):
        scale, shift = group_affine(x, norm.norm_layer)
        y, b = norm.modulation(x.shape[2], zq)
    else:
        scale, shift = group_affine(x, norm)
        y = b = None

    def frames(start: int, stop: int) -> torch.Tensor:
        h = torch.addcmul(shift, x[:, :, start:stop], scale)  # [B, C, t, H, W] in fp32
        if y is not None:
            _modulate_(h, y[:, :, start:stop].float(), b[:, :, start:stop].float())
        return activation(act, h.to(x.dtype), inplace=True)

    return frames


class ResnetBlock3D(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        eps: float,
        act: str,
        zq_channels: int | None = None,
        operations=None,
    ):
        super().__init__()
        ops = operations or DEFAULT_OPERATIONS
        self.act = act
        if zq_channels is None:
            self.norm1 = ops.GroupNorm(groups, in_channels, eps=eps)
            self.norm2 = ops.GroupNorm(groups, out_channels, eps=eps)
        else:
            self.norm1 = SpatialNorm3D(in_channels, zq_channels, groups, ops)
            self.norm2 = SpatialNorm3D(out_channels, zq_channels, groups, ops)
        self.conv1 = CausalConv3d(in_channels, out_channels, operations=ops)
        self.conv2 = CausalConv3d(out_channels, out_channels, operations=ops)
        shortcut = fast_conv3d(ops.Conv3d)
        self.conv_shortcut = shortcut(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _norm(self, norm: nn.Module, x: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
        return norm(x, zq) if isinstance(norm, SpatialNorm3D) else norm(x)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, cache: Cache | None = None):
        if not torch.is_grad_enabled():
            return self._forward_lean(x, zq, cache)
        h = self.conv1(activation(self.act, self._norm(self.norm1, x, zq)), cache)
        h = self.conv2(activation(self.act, self._norm(self.norm2, h, zq)), cache)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h + x

    def _forward_lean(self, x: torch.Tensor, zq: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        n = x.shape[2]
        out_ch = self.conv1.conv.out_channels
        h = x.new_empty(x.shape[0], out_ch, *x.shape[2:])
        self.conv1.stream(normalized_frames(x, self.norm1, self.act, zq), n, h, cache)
        self.conv2.stream(normalized_frames(h, self.norm2, self.act, zq), n, h, cache, overwrite_source=True)
        if self.conv_shortcut is None:
            return h.add_(x)
        step = _chunk_frames(_frame_bytes(x) + _frame_bytes(h))
        for a in range(0, n, step):
            h[:, :, a : a + step] += self.conv_shortcut(x[:, :, a : a + step])
        return h


class Downsample3D(nn.Module):
    """Optional temporal average pooling of frame pairs, then a stride-2 spatial conv."""

    def __init__(self, channels: int, compress_time: bool, operations=None):
        super().__init__()
        self.compress_time = compress_time
        self.conv = (operations or DEFAULT_OPERATIONS).Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def _pooled(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Output frames [start, stop) of the temporal pooling."""
        if not self.compress_time:
            return x[:, :, start:stop]
        odd = x.shape[2] % 2
        parts = []
        if odd and start == 0:
            parts.append(x[:, :, :1])
            start = 1
        if stop > start:
            lo = 2 * start - odd
            pairs = rearrange(x[:, :, lo : 2 * stop - odd], "b c (t two) h w -> b c t two h w", two=2)
            parts.append((pairs[:, :, :, 0] + pairs[:, :, :, 1]) / 2)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)  # [B, C, stop - start, H, W]

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        bsz = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = self.conv(F.pad(x, (0, 1, 0, 1)))  # [(B t), C, H, W] -> [(B t), C, H/2, W/2]
        return rearrange(x, "(b t) c h w -> b c t h w", b=bsz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = encoded_frames(x.shape[2], 1) if self.compress_time else x.shape[2]
        if torch.is_grad_enabled():
            return self._conv(self._pooled(x, 0, n)).contiguous()
        b, c, _, hh, ww = x.shape
        out = x.new_empty(b, c, n, (hh - 2) // 2 + 1, (ww - 2) // 2 + 1)
        step = _chunk_frames(_frame_bytes(x) * 3)
        for a in range(0, n, step):
            out[:, :, a : a + step] = self._conv(self._pooled(x, a, min(a + step, n)))
        return out


class Upsample3D(nn.Module):
    """Nearest 2x upsampling (in time too when ``compress_time``), then a 3x3 conv per frame."""

    def __init__(self, channels: int, compress_time: bool, operations=None):
        super().__init__()
        self.compress_time = compress_time
        self.conv = (operations or DEFAULT_OPERATIONS).Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def _time_index(self, n: int) -> list[int]:
        if not self.compress_time or n == 1:
            return list(range(n))
        if n % 2 == 1:
            return [0] + [1 + j // 2 for j in range(2 * (n - 1))]
        return [j // 2 for j in range(2 * n)]

    def _frames(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        bsz = x.shape[0]
        x = rearrange(x.index_select(2, index), "b c t h w -> (b t) c h w")
        x = self.conv(F.interpolate(x, scale_factor=2.0))  # [(B t), C, h, w] -> [(B t), C, 2h, 2w]
        return rearrange(x, "(b t) c h w -> b c t h w", b=bsz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.tensor(self._time_index(x.shape[2]), device=x.device)
        if torch.is_grad_enabled():
            return self._frames(x, index).contiguous()
        b, c, _, hh, ww = x.shape
        n = len(index)
        out = x.new_empty(b, c, n, 2 * hh, 2 * ww)
        step = _chunk_frames(_frame_bytes(out) * 3)
        for a in range(0, n, step):
            out[:, :, a : a + step] = self._frames(x, index[a : a + step])
        return out


class DownBlock3D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, eps: float, act: str,
                 downsample: bool, compress_time: bool, operations=None):  # fmt: skip
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_ch if i == 0 else out_ch, out_ch, groups, eps, act, operations=operations)
            for i in range(layers)
        )
        self.downsamplers = nn.ModuleList([Downsample3D(out_ch, compress_time, operations)]) if downsample else None

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, None, cache)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class MidBlock3D(nn.Module):
    def __init__(self, channels: int, groups: int, eps: float, act: str, zq_channels: int | None = None,
                 operations=None):  # fmt: skip
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(channels, channels, groups, eps, act, zq_channels, operations) for _ in range(2)
        )

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, cache: Cache | None = None):
        for resnet in self.resnets:
            x = resnet(x, zq, cache)
        return x


class UpBlock3D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, eps: float, act: str,
                 zq_channels: int, upsample: bool, compress_time: bool, operations=None):  # fmt: skip
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_ch if i == 0 else out_ch, out_ch, groups, eps, act, zq_channels, operations)
            for i in range(layers)
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_ch, compress_time, operations)]) if upsample else None

    def forward(self, x: torch.Tensor, zq: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, zq, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


def temporal_levels(ratio: float) -> int:
    return int(math.log2(ratio))


def norm_act_conv(
    x: torch.Tensor,
    norm: nn.Module,
    act: str,
    conv: CausalConv3d,
    zq: torch.Tensor | None,
    cache: Cache | None,
) -> torch.Tensor:
    """``conv(act(norm(x)))``: the output head of the encoder and the decoder."""
    if torch.is_grad_enabled():
        h = norm(x, zq) if isinstance(norm, SpatialNorm3D) else norm(x)
        return conv(activation(act, h), cache)
    out = x.new_empty(x.shape[0], conv.conv.out_channels, *x.shape[2:])
    return conv.stream(normalized_frames(x, norm, act, zq), x.shape[2], out, cache)


def causal_conv(conv: CausalConv3d, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    """``conv(x)`` that streams into a preallocated output when no grad is needed."""
    if torch.is_grad_enabled():
        return conv(x, cache)
    out = x.new_empty(x.shape[0], conv.conv.out_channels, *x.shape[2:])
    return conv.stream(lambda a, b: x[:, :, a:b], x.shape[2], out, cache)
