"""Text encoding with CogVideoX's rule, on a core CLIP (T5-XXL from core Load CLIP)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..cogvideox.text import MAX_TOKENS, fit_tokens
from .common import CATEGORY, CheckedInputs, CogVideoXNodeError

log = logging.getLogger(__name__)


class CogVideoXTextEncode(CheckedInputs):
    DISPLAY_NAME = "CogVideoX Text Encode"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CogVideoXTextEncode",
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/conditioning",
            description="Encodes a prompt the way CogVideoX was trained: T5-XXL, exactly 226 tokens, padded, no "
            "attention mask. Takes the CLIP from core Load CLIP (t5xxl_fp16.safetensors, type sd3) or CogVideoX T5 "
            "Loader. Longer prompts are truncated with a warning.",
            inputs=[
                io.Clip.Input("clip", tooltip="A T5 text encoder: core Load CLIP (type sd3) with a T5-XXL file."),
                io.String.Input(
                    "text",
                    multiline=True,
                    dynamic_prompts=True,
                    tooltip=f"The prompt. At most {MAX_TOKENS - 1} T5 tokens are used; "
                    "longer prompts are truncated with a warning.",
                ),
            ],
            outputs=[io.Conditioning.Output(tooltip="Standard CONDITIONING: [[T5 embeddings [1, 226, 4096], {}]].")],
        )

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        tokens = clip.tokenize(text)
        if "t5xxl" not in tokens:
            found = ", ".join(sorted(tokens)) or "nothing"
            raise CogVideoXNodeError(
                cls.DISPLAY_NAME,
                f"the CLIP input is not a T5 encoder (it tokenises for: {found}). CogVideoX needs T5-XXL: load "
                "t5xxl_fp16.safetensors with core Load CLIP, type sd3, or use CogVideoX T5 Loader.",
            )
        batch = [pair for chunk in tokens["t5xxl"] for pair in chunk]
        fit = fit_tokens([int(p[0]) for p in batch], [float(p[1]) for p in batch])
        if fit.dropped:
            log.warning(
                "%s: the prompt is %d T5 tokens too long; CogVideoX reads %d tokens, the rest was cut: ...%r",
                cls.DISPLAY_NAME,
                fit.dropped,
                MAX_TOKENS,
                text[-80:],
            )
        tokens = {key: [] for key in tokens}  # other encoders (CLIP-L/G of an SD3 set) are not used
        tokens["t5xxl"] = [list(zip(fit.ids, fit.weights, strict=True))]
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens))
