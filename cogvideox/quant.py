"""Low-precision weight storage for the transformer: bf16, fp16 or fp8 weights, wider compute.

``store_weights(model, torch.float8_e4m3fn)`` replaces the big ``nn.Linear`` layers of the
transformer blocks (attention projections and feed-forward; not the adaptive-norm linears, which
read their weights directly in float32) with ``LowPrecisionLinear``: a ``Linear`` subclass that
keeps its weight in the storage dtype (fp8 with one per-tensor scale) and upcasts it to the
compute dtype inside ``forward``. The rest of the model keeps its dtype. Memory of the replaced
weights: 1/4 (fp8) or 1/2 (bf16/fp16) of float32; the cost is one upcast per layer and call.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

STORAGE_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
# Linear layers of a block whose forward is called as a module (safe to replace).
BLOCK_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")


class LowPrecisionLinear(nn.Linear):
    """``nn.Linear`` storing ``weight`` in ``storage_dtype`` (scaled per tensor for fp8).

    ``forward`` computes ``x @ (weight * scale).T + bias`` in ``compute_dtype``; the bias stays
    in ``compute_dtype``. ``compute_dtype`` is what callers should cast inputs to.

    It follows the casting-layer protocol of ``ops`` (ComfyUI's ``comfy.ops``):
    ``comfy_cast_weights`` is true (the forward always casts), and the callables in
    ``weight_function`` / ``bias_function`` are applied on every call to the weight cast to
    ``compute_dtype`` *before* the fp8 scale (the stored values' domain, as ``comfy.ops`` applies
    them before a scaled fp8 layer's scale) and to the bias. Patches that come this way (a LoRA at
    compute time) are never rounded to the storage dtype.
    """

    comfy_cast_weights = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        storage_dtype: torch.dtype,
        compute_dtype: torch.dtype,
        device: torch.device | None = None,
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=compute_dtype)
        self.storage_dtype = storage_dtype
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(self.weight.detach().to(storage_dtype), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))
        self.weight_function: list = []
        self.bias_function: list = []

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, storage_dtype: torch.dtype, compute_dtype: torch.dtype | None = None
    ) -> LowPrecisionLinear:
        compute = compute_dtype or linear.weight.dtype
        with torch.device("meta"):
            new = cls(
                linear.in_features,
                linear.out_features,
                linear.bias is not None,
                storage_dtype=storage_dtype,
                compute_dtype=compute,
            )
        weight = linear.weight.detach()
        scale = torch.ones((), dtype=torch.float32, device=weight.device)
        if storage_dtype in _FP8:
            amax = weight.abs().max().float()
            scale = (amax / torch.finfo(storage_dtype).max).clamp_min(1e-12)  # per-tensor scale
            stored = (weight.float() / scale).to(storage_dtype)
        else:
            stored = weight.to(storage_dtype)
        new.weight = nn.Parameter(stored, requires_grad=False)
        new.weight_scale = scale.reshape(()).to(torch.float32)
        new.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(compute), requires_grad=False)
        return new

    def upcast_weight(self, device: torch.device | None = None) -> torch.Tensor:
        """The weight [out, in] the layer computes with, on ``device`` in ``compute_dtype``:
        the stored values, then ``weight_function``, then the fp8 scale."""
        w = self.weight.to(device=device or self.weight.device, dtype=self.compute_dtype)  # [out, in]
        for fn in self.weight_function:
            w = fn(w)
        if self.storage_dtype in _FP8:
            w = w.mul_(self.weight_scale.to(device=w.device, dtype=self.compute_dtype))  # a copy: fp8 -> float
        return w

    def stored_scale(self) -> torch.Tensor | None:
        """The per-tensor scale the stored values are multiplied by (fp8), None without one."""
        return self.weight_scale if self.storage_dtype in _FP8 else None

    def stored_domain(self, weight: torch.Tensor) -> torch.Tensor:
        """A weight (or a weight difference) [out, in] in the domain ``weight_function`` works in
        (divided by the fp8 scale), so that ``upcast_weight`` gives ``weight`` back."""
        scale = self.stored_scale()
        return weight if scale is None else weight / scale.to(weight.device, weight.dtype)

    def _stored(self, weight: torch.Tensor) -> torch.Tensor:
        """A compute-precision weight [out, in] in the storage dtype, with the layer's current scale."""
        if self.storage_dtype in _FP8:
            limit = torch.finfo(self.storage_dtype).max
            weight = (weight.float() / self.weight_scale.to(weight.device)).clamp_(-limit, limit)
        return weight.to(self.storage_dtype)

    # ComfyUI's ModelPatcher finds these two by name (``convert_<param>`` / ``set_<param>``) when it
    # patches ``<layer>.weight`` with ``add_patches`` (core LoRA loaders): it adds the patch to
    # ``convert_weight(stored as float)`` and hands the sum to ``set_weight``, which rounds it to the
    # storage dtype (the LoRA's difference is rounded too, as in core's own fp8 layers). The scale
    # stays as it is: the patcher's backup of ``weight`` alone restores the layer. On a streamed
    # layer (partial load) the patcher applies the patch at compute time through ``weight_function``
    # and asks ``set_weight(..., return_weight=True)`` for the stored-domain weight: that one is
    # given back unrounded, so the patch keeps its precision.
    def convert_weight(self, weight: torch.Tensor, inplace: bool = False, **kwargs) -> torch.Tensor:
        """The stored weight (cast to a float dtype) -> the weight the layer computes with."""
        if self.storage_dtype not in _FP8:
            return weight
        scale = self.weight_scale.to(weight.device, weight.dtype)
        return weight.mul_(scale) if inplace else weight * scale

    def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed=None, return_weight=False, **kwargs):
        """Store a full-precision weight [out, in] (e.g. with a LoRA added) in the storage dtype;
        ``return_weight``: give back the stored-domain weight unrounded instead (compute-time patch)."""
        if return_weight:
            return self.stored_domain(weight)
        stored = self._stored(weight)
        if inplace_update:
            self.weight.data.copy_(stored)
        else:
            self.weight = nn.Parameter(stored, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # weights left on another device (a ComfyUI partial load that did not fit them) come along
        bias = None if self.bias is None else self.bias.to(x.device)
        for fn in self.bias_function if bias is not None else ():
            bias = fn(bias)
        return F.linear(x.to(self.compute_dtype), self.upcast_weight(x.device), bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, storage={self.storage_dtype}, compute={self.compute_dtype}"


def _resolve(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown weight storage {dtype!r}; one of {list(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[dtype]


def store_weights(
    model: nn.Module, storage: torch.dtype | str, compute_dtype: torch.dtype | None = None
) -> nn.Module:
    """Replace the block Linear layers of a ``CogVideoXTransformer`` in place; returns ``model``.

    ``storage``: a dtype or one of ``STORAGE_DTYPES`` ("bf16", "fp16", "fp8"). ``compute_dtype``:
    the dtype of the matmuls (default: each layer's current weight dtype, e.g. float32 on CPU,
    bfloat16 for a bf16 model).
    """
    storage_dtype = _resolve(storage)
    blocks = getattr(model, "transformer_blocks", None)
    if blocks is None:
        raise TypeError(f"expected a CogVideoXTransformer (with transformer_blocks), got {type(model).__name__}")
    replaced = 0
    for block in blocks:
        for path in BLOCK_LINEARS:
            parent_path, _, name = path.rpartition(".")
            parent = block.get_submodule(parent_path)
            layer = parent.get_submodule(name)
            if isinstance(layer, LowPrecisionLinear) or not isinstance(layer, nn.Linear):
                continue
            new = LowPrecisionLinear.from_linear(layer, storage_dtype, compute_dtype)
            if isinstance(parent, nn.ModuleList):
                parent[int(name)] = new
            else:
                setattr(parent, name, new)
            replaced += 1
    log.info("stored %d block linear layers in %s", replaced, storage_dtype)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
