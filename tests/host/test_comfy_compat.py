"""ComfyUI 0.3.75's text tokenizers under the transformers this environment installs
(transformers 5.x is newer than that ComfyUI release): they must still produce the ids that
the tokenizer files themselves define."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import comfy_tree

pytestmark = pytest.mark.host

PROBE = Path(__file__).resolve().parents[1] / "harness" / "probe_tokenizers.py"


@pytest.fixture(scope="module")
def comfy_tokens() -> dict:
    comfy_dir = comfy_tree.prepare()
    env = dict(os.environ, PYTHONPATH=str(comfy_tree.TORCHVISION_STANDIN))
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(PROBE)], cwd=comfy_dir, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_comfy_t5_tokenizer_matches_its_tokenizer_json(comfy_tokens):
    from tokenizers import Tokenizer

    oracle = Tokenizer.from_file(str(comfy_tree.prepare() / "comfy/text_encoders/t5_tokenizer/tokenizer.json"))
    expected = oracle.encode("a photo of a cat").ids  # ends with </s> = 1
    assert expected[-1] == 1 and len(expected) > 3
    tokens = comfy_tokens["t5"]
    assert tokens[: len(expected)] == expected, (comfy_tokens["transformers"], tokens[:12])
    assert set(tokens[len(expected):]) <= {0}, "T5 padding must be the pad id 0"


def test_comfy_clip_tokenizer_matches_its_vocab(comfy_tokens):
    vocab = json.loads((comfy_tree.prepare() / "comfy/sd1_tokenizer/vocab.json").read_text())
    words = [vocab[f"{w}</w>"] for w in "a photo of a cat".split()]
    expected = [vocab["<|startoftext|>"], *words, vocab["<|endoftext|>"]]
    assert comfy_tokens["clip"][: len(expected)] == expected, (comfy_tokens["transformers"], comfy_tokens["clip"][:8])
