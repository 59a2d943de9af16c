"""CogVideoX Nodes: CogVideoX text-, image- and video-to-video as native ComfyUI nodes.

ComfyUI imports this package from ``custom_nodes/``; the mappings below register the nodes,
which are V3 nodes (``io.ComfyNode``; the literal list of node ids is in ``nodes/__init__.py``).
``comfy_entrypoint`` offers the same classes the V3 way; ComfyUI 0.3.75 uses it only for packs
without ``NODE_CLASS_MAPPINGS``, so nothing is registered twice. ``web/`` holds the registry
icon and the node help pages (``web/docs/<NodeId>.md``) that the frontend opens. The numerical
work lives in the ComfyUI-free library ``cogvideox/``.
"""

import importlib.util

if importlib.util.find_spec("comfy") is None:
    # Imported outside ComfyUI (pytest collects this folder as a package): no nodes to register.
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_entrypoint  # noqa: F401

# Served at /extensions/<pack folder>/ (help pages: docs/<NodeId>.md, as the frontend looks for them).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
