"""The CogVideoX node set: thin ComfyUI adapters over the ``cogvideox`` library."""

from .latents import CogVideoXEmptyLatent, CogVideoXImageToVideo, CogVideoXVideoToVideo
from .loaders import CogVideoXModelLoader, CogVideoXT5Loader, CogVideoXVAELoader
from .lora import CogVideoXLoRA
from .sampling import CogVideoXSampler
from .text import CogVideoXTextEncode
from .vae import CogVideoXVAEDecode, CogVideoXVAEEncode
from .video import CogVideoXSaveVideo

# Node ids, input names and widget order are a public contract: saved workflows must keep
# loading. Deprecate, never rename.
_NODES = (
    CogVideoXModelLoader,
    CogVideoXVAELoader,
    CogVideoXT5Loader,
    CogVideoXTextEncode,
    CogVideoXEmptyLatent,
    CogVideoXImageToVideo,
    CogVideoXVideoToVideo,
    CogVideoXSampler,
    CogVideoXVAEDecode,
    CogVideoXVAEEncode,
    CogVideoXSaveVideo,
    CogVideoXLoRA,
)

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: cls.DISPLAY_NAME for cls in _NODES}
