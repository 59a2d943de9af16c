"""CogVideoX's text rule and reading T5 encoder weights.

CogVideoX was trained on T5-XXL encodings of prompts tokenised to exactly 226 tokens
(truncated, end token kept, padded with the pad token) and encoded WITHOUT an attention
mask, so the pad positions are attended and part of the conditioning.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open

from .loading import refuse_pickle

log = logging.getLogger(__name__)

MAX_TOKENS = 226
PAD_ID = 0
END_ID = 1

# T5-XXL v1.1 (the encoder CogVideoX uses); keys are Hugging Face T5Config names.
T5_XXL_CONFIG = {
    "d_ff": 10240,
    "d_kv": 64,
    "d_model": 4096,
    "dense_act_fn": "gelu_pytorch_tanh",
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "num_heads": 64,
    "num_layers": 24,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "vocab_size": 32128,
}


@dataclass(frozen=True)
class TokenFit:
    ids: list[int]
    weights: list[float]
    dropped: int  # prompt tokens cut by truncation


def fit_tokens(ids: list[int], weights: list[float] | None = None, length: int = MAX_TOKENS) -> TokenFit:
    """Apply the rule to one tokenised prompt (with or without its end token and padding).

    Returns exactly ``length`` ids: the prompt's tokens (truncated so the end token fits),
    the end token, then pad tokens.
    """
    weights = [1.0] * len(ids) if weights is None else list(weights)
    end = ids.index(END_ID) if END_ID in ids else len(ids)
    body, body_w = ids[:end], weights[:end]
    while body and body[-1] == PAD_ID:
        body, body_w = body[:-1], body_w[:-1]
    keep = length - 1
    dropped = max(0, len(body) - keep)
    body, body_w = body[:keep], body_w[:keep]
    pad = length - len(body) - 1
    return TokenFit(body + [END_ID] + [PAD_ID] * pad, body_w + [1.0] * (pad + 1), dropped)


def read_t5(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """T5 encoder weights (Hugging Face key layout) and their config from a file or folder.

    The config comes from ``config.json`` beside the weights, the safetensors metadata
    ``config`` entry, or (for a bare T5-XXL file) the T5-XXL defaults.
    """
    if os.path.isdir(path):
        files = sorted(f for ext in ("*.safetensors", "*.sft") for f in glob.glob(os.path.join(path, ext)))
        config_path = os.path.join(path, "config.json")
        config = None
        if os.path.isfile(config_path):
            with open(config_path) as f:
                try:
                    config = json.load(f)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{config_path} is not valid JSON ({err.msg}); it is empty or cut short: download it again"
                    ) from err
    else:
        files, config = [path], None
    if not files:
        raise ValueError(f"no .safetensors weights found in {path}")
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        refuse_pickle(file)  # never unpickled: named as the pickle it is
        if not file.endswith((".safetensors", ".sft")):
            raise ValueError(f"{os.path.basename(file)} is not a .safetensors file; only safetensors are read")
        try:
            with safe_open(file, framework="pt") as f:
                meta = f.metadata() or {}
                if config is None and "config" in meta:
                    config = json.loads(meta["config"])
                for key in f.keys():
                    state_dict[key] = f.get_tensor(key)
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"cannot read {os.path.basename(file)} as safetensors ({str(err).strip()}); the file is truncated "
                "or not a safetensors file: download it again"
            ) from err
    if "shared.weight" not in state_dict and "encoder.embed_tokens.weight" not in state_dict:
        sample = ", ".join(list(state_dict)[:3])
        raise ValueError(f"this is not a T5 encoder (expected 'shared.weight' and 'encoder.block.*'; found {sample})")
    if config is None:
        config = dict(T5_XXL_CONFIG)
        d_model = (state_dict.get("shared.weight", state_dict.get("encoder.embed_tokens.weight"))).shape[1]
        if d_model != T5_XXL_CONFIG["d_model"]:
            raise ValueError(f"a T5 with d_model={d_model} needs its config.json (or metadata 'config') beside it")
    if config.get("dense_act_fn") == "gelu_new":  # the same tanh-approximated GELU under its other name
        config = {**config, "dense_act_fn": "gelu_pytorch_tanh"}
    return state_dict, config
