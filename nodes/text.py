"""Text encoding with CogVideoX's rule, on a core CLIP (T5-XXL from core Load CLIP)."""

from __future__ import annotations

import logging

from ..cogvideox.text import MAX_TOKENS, fit_tokens
from .common import CATEGORY, CogVideoXNodeError

log = logging.getLogger(__name__)


class CogVideoXTextEncode:
    DISPLAY_NAME = "CogVideoX Text Encode"
    DESCRIPTION = (
        "Encodes a prompt the way CogVideoX was trained: T5-XXL, exactly 226 tokens, padded, no attention "
        "mask. Takes the CLIP from core Load CLIP (t5xxl_fp16.safetensors, type sd3) or CogVideoX T5 Loader. "
        "Longer prompts are truncated with a warning."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "execute"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("Standard CONDITIONING: [[T5 embeddings [1, 226, 4096], {}]].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "A T5 text encoder: core Load CLIP (type sd3) with a T5-XXL file."}),
                "text": (
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "tooltip": f"The prompt. At most {MAX_TOKENS - 1} T5 tokens are used; "
                        "longer prompts are truncated with a warning.",
                    },
                ),
            }
        }

    def execute(self, clip, text):
        tokens = clip.tokenize(text)
        if "t5xxl" not in tokens:
            found = ", ".join(sorted(tokens)) or "nothing"
            raise CogVideoXNodeError(
                self.DISPLAY_NAME,
                f"the CLIP input is not a T5 encoder (it tokenises for: {found}). CogVideoX needs T5-XXL: load "
                "t5xxl_fp16.safetensors with core Load CLIP, type sd3, or use CogVideoX T5 Loader.",
            )
        batch = [pair for chunk in tokens["t5xxl"] for pair in chunk]
        fit = fit_tokens([int(p[0]) for p in batch], [float(p[1]) for p in batch])
        if fit.dropped:
            log.warning(
                "%s: the prompt is %d T5 tokens too long; CogVideoX reads %d tokens, the rest was cut: ...%r",
                self.DISPLAY_NAME,
                fit.dropped,
                MAX_TOKENS,
                text[-80:],
            )
        tokens = {key: [] for key in tokens}  # other encoders (CLIP-L/G of an SD3 set) are not used
        tokens["t5xxl"] = [list(zip(fit.ids, fit.weights, strict=True))]
        return (clip.encode_from_tokens_scheduled(tokens),)
