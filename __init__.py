"""CogVideoX Nodes: CogVideoX text-, image- and video-to-video as native ComfyUI nodes.

ComfyUI imports this package from ``custom_nodes/``; the V1 mappings below register the
nodes. The numerical work lives in the ComfyUI-free library ``cogvideox/``.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
