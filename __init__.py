"""CogVideoX Nodes: CogVideoX text-, image- and video-to-video as native ComfyUI nodes.

ComfyUI imports this package from ``custom_nodes/``; the V1 mappings below register the
nodes. The numerical work lives in the ComfyUI-free library ``cogvideox/``.
"""

import importlib.util

if importlib.util.find_spec("comfy") is None:
    # Imported outside ComfyUI (pytest collects this folder as a package): no nodes to register.
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
