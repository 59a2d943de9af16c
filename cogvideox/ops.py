"""The layer classes the networks are built from, and the test the fast paths make on a layer.

The transformer and the VAE take an ``operations`` argument: any namespace with the classes
``Linear``, ``Conv2d``, ``Conv3d``, ``LayerNorm`` and ``GroupNorm`` (``torch.nn`` by default).
ComfyUI's ``comfy.ops`` namespaces (``disable_weight_init``, ``manual_cast``, ...) fit: their
layers are subclasses of the torch ones with the same parameter names, whose ``forward`` casts
the weight to the input's dtype and device and applies patches when the model is partially
loaded (low-VRAM streaming), stores weights in another dtype (fp8) or carries LoRA patches.
The library never imports comfy; it recognises those layers by their protocol:

- ``comfy_cast_weights`` (bool): the forward casts the weight to the input's dtype and device;
- ``weight_function`` / ``bias_function`` (lists of callables): applied to the cast weight and
  bias on every call (ComfyUI's LoRA patches on streamed layers).

The fast paths (oneDNN linears and convs, one fused QKV matmul, float32 weights read directly)
use a layer's own tensors; they apply only to ``resident`` layers, where those tensors are
exactly what the layer's forward would use. Any other layer runs through its own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_OPERATIONS = nn


def resident(layer: nn.Module) -> bool:
    """True when ``layer``'s weight and bias are used as they are: nothing to cast or patch."""
    return not (
        getattr(layer, "comfy_cast_weights", False)
        or getattr(layer, "weight_function", None)
        or getattr(layer, "bias_function", None)
    )


def plain_linear(layer: nn.Module) -> bool:
    """A resident ``Linear`` with a bias whose forward is ``F.linear``: safe to run as ``addmm``.

    ``torch.nn.Linear`` itself, or a ``comfy.ops`` Linear with nothing to cast (its forward is
    then ``F.linear`` on its own tensors); not another subclass (e.g. ``quant.LowPrecisionLinear``).
    """
    return (
        isinstance(layer, nn.Linear)
        and (type(layer) is nn.Linear or hasattr(layer, "comfy_cast_weights"))
        and layer.bias is not None
        and resident(layer)
    )


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype to feed ``layer``: its ``compute_dtype`` attribute when set (low-precision or
    manually cast storage), else its weight dtype."""
    return getattr(layer, "compute_dtype", None) or layer.weight.dtype


def set_compute_dtype(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Mark the casting layers of ``model`` (``comfy_cast_weights`` ones) to be fed ``dtype``."""
    if dtype is None:
        return
    for module in model.modules():
        if hasattr(module, "comfy_cast_weights") and getattr(module, "weight", None) is not None:
            module.compute_dtype = dtype


def weight_bias(
    layer: nn.Module, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``layer``'s weight and bias as its forward uses them, on ``device`` in ``dtype``.

    For a layer with ``weight_function`` / ``bias_function`` (patches) they are applied after
    the cast, in the order ``comfy.ops.cast_bias_weight`` applies them.
    """
    out = []
    for name, functions in (("weight", "weight_function"), ("bias", "bias_function")):
        tensor = getattr(layer, name, None)
        if tensor is not None:
            tensor = tensor.to(device=device or tensor.device, dtype=dtype or tensor.dtype)
            for fn in getattr(layer, functions, None) or ():
                tensor = fn(tensor)
        out.append(tensor)
    return out[0], out[1]


def linear_fp32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed in float32 whatever the weight dtype (float32 out)."""
    x = x.float()
    if resident(layer) and (type(layer) is nn.Linear or hasattr(layer, "comfy_cast_weights")):
        bias = None if layer.bias is None else layer.bias.float()
        return F.linear(x, layer.weight.float(), bias)
    return layer(x)  # a casting layer casts its weight to x's dtype (float32) and device
