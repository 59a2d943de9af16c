"""Tokenize with ComfyUI 0.3.75's own tokenizer classes under the installed transformers and
print JSON (run inside the ComfyUI tree, like ``probe_pack.py``)."""

from __future__ import annotations

import json
import os
import sys

TEXT = "a photo of a cat"


def main() -> int:
    sys.path.insert(0, os.getcwd())
    sys.argv = ["main.py", "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import transformers
    from comfy import sd1_clip
    from comfy.text_encoders import sd3_clip

    t5 = sd3_clip.T5XXLTokenizer().tokenize_with_weights(TEXT)
    clip = sd1_clip.SDTokenizer().tokenize_with_weights(TEXT)
    result = {
        "transformers": transformers.__version__,
        "t5": [tok for tok, _w in t5[0]],
        "clip": [tok for tok, _w in clip[0]],
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
