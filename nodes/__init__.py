"""The CogVideoX node set: thin ComfyUI adapters over the ``cogvideox`` library, as V3 nodes
(``comfy_api.latest.io.ComfyNode``)."""

from comfy_api.latest import ComfyExtension, io

from .fun import CogVideoXFunControlConditioning, CogVideoXFunInpaintConditioning
from .latents import CogVideoXEmptyLatent, CogVideoXImageToVideo, CogVideoXVideoToVideo
from .loaders import CogVideoXModelLoader, CogVideoXT5Loader, CogVideoXVAELoader
from .lora import CogVideoXLoRA
from .sampling import CogVideoXSampler
from .text import CogVideoXTextEncode
from .vae import CogVideoXVAEDecode, CogVideoXVAEEncode
from .video import CogVideoXSaveVideo
from .videocrafter import (
    VideoCrafterCheckpointLoader,
    VideoCrafterEmptyLatent,
    VideoCrafterFPS,
    VideoCrafterImageConditioning,
    VideoCrafterSampler,
)

# Node ids, input names and widget order are a public contract: saved workflows must keep
# loading. Deprecate, never rename.
#
# A dict literal with string keys, so that tools which read the source without importing it
# (ComfyUI-Manager's scanner, the registry) find every node id. Adding a node is one line here,
# appended at the end: "<NodeId>": <NodeClass>. tests/host/test_discoverable_nodes.py fails when
# this literal and the node classes of nodes/ disagree.
NODE_CLASS_MAPPINGS = {
    "CogVideoXModelLoader": CogVideoXModelLoader,
    "CogVideoXVAELoader": CogVideoXVAELoader,
    "CogVideoXT5Loader": CogVideoXT5Loader,
    "CogVideoXTextEncode": CogVideoXTextEncode,
    "CogVideoXEmptyLatent": CogVideoXEmptyLatent,
    "CogVideoXImageToVideo": CogVideoXImageToVideo,
    "CogVideoXVideoToVideo": CogVideoXVideoToVideo,
    "CogVideoXSampler": CogVideoXSampler,
    "CogVideoXVAEDecode": CogVideoXVAEDecode,
    "CogVideoXVAEEncode": CogVideoXVAEEncode,
    "CogVideoXSaveVideo": CogVideoXSaveVideo,
    "VideoCrafterCheckpointLoader": VideoCrafterCheckpointLoader,
    "VideoCrafterImageConditioning": VideoCrafterImageConditioning,
    "VideoCrafterFPS": VideoCrafterFPS,
    "VideoCrafterEmptyLatent": VideoCrafterEmptyLatent,
    "VideoCrafterSampler": VideoCrafterSampler,
    "CogVideoXFunInpaintConditioning": CogVideoXFunInpaintConditioning,
    "CogVideoXFunControlConditioning": CogVideoXFunControlConditioning,
    "CogVideoXLoRA": CogVideoXLoRA,
}

_NODES = tuple(NODE_CLASS_MAPPINGS.values())
# Each class carries its display name; the scanner reads node ids only, so this one is derived.
NODE_DISPLAY_NAME_MAPPINGS = {node_id: cls.DISPLAY_NAME for node_id, cls in NODE_CLASS_MAPPINGS.items()}


class CogVideoXExtension(ComfyExtension):
    """The V3 entry point: the same node classes as ``NODE_CLASS_MAPPINGS``. ComfyUI 0.3.75 reads
    ``NODE_CLASS_MAPPINGS`` when a pack has it and calls ``comfy_entrypoint`` only when it has not,
    so the nodes are registered once either way."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(_NODES)


async def comfy_entrypoint() -> CogVideoXExtension:
    return CogVideoXExtension()
