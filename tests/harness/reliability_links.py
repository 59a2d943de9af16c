"""Helpers of the second reliability pass: values through links, refusals, saved videos.

Shared by tests/host/test_linked_inputs.py and the other per-defect modules (batches, cancel,
core conditioning, text length, sizes, playable video, loader messages).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from cogvideox.video_io import VideoInfo, read_video
from harness.host import ComfyClient, ExecutionFailed, PromptRejected, output_files
from harness.reliability import execution_error, t2v_graph

PRIMITIVES = {"INT": "PrimitiveInt", "FLOAT": "PrimitiveFloat", "BOOLEAN": "PrimitiveBoolean",
              "STRING": "PrimitiveString"}


def rejected(client: ComfyClient, api: dict[str, Any]) -> dict[str, Any]:
    """The ``node_errors`` of a prompt ComfyUI refuses (400) before it runs."""
    try:
        prompt_id = client.queue(api)
    except PromptRejected as refusal:
        assert refusal.status == 400
        return refusal.node_errors
    client.interrupt()
    client.wait(prompt_id, timeout=300, check=False)
    pytest.fail("ComfyUI accepted the prompt; it should have answered 400 with node_errors")


def failed(client: ComfyClient, api: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """The ``execution_error`` of a prompt that fails while it runs."""
    with pytest.raises(ExecutionFailed) as failure:
        client.run(api, timeout=timeout)
    return execution_error(failure.value)


def refusal_text(node_errors: dict[str, Any], node: str) -> str:
    """The pack's message of a ``custom_validation_failed`` refusal (``details`` is "input - message")."""
    errors = node_errors[node]["errors"]
    assert all(e["type"] == "custom_validation_failed" for e in errors), errors
    texts = {e["details"].split(" - ", 1)[1] for e in errors}
    assert len(texts) == 1, texts
    return texts.pop()


def linked(api: dict[str, Any], node: str, name: str, kind: str, value: Any) -> dict[str, Any]:
    """A copy of ``api`` where ``node``'s input ``name`` comes from a core Primitive node holding ``value``."""
    api = copy.deepcopy(api)
    source = f"9{len(api) + 100}"
    api[source] = {"class_type": PRIMITIVES[kind], "inputs": {"value": value}}
    api[node]["inputs"][name] = [source, 0]
    return api


def typed(api: dict[str, Any], node: str, name: str, value: Any) -> dict[str, Any]:
    api = copy.deepcopy(api)
    api[node]["inputs"][name] = value
    return api


def saved_videos(client: ComfyClient, entry: dict[str, Any]) -> list[tuple[str, VideoInfo, torch.Tensor]]:
    """``(file name, info, decoded frames [F, H, W, 3])`` for every video the prompt saved, in order."""
    videos = []
    for record in output_files(entry):
        if not record["filename"].endswith((".mp4", ".webm")):
            continue
        data = client.view(record["filename"], record["subfolder"], record["type"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / record["filename"]
            path.write_bytes(data)
            frames, info = read_video(str(path))
        videos.append((record["filename"], info, frames))
    return videos


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two frame stacks in 0..1 (inf when identical)."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def from_images(images_node: dict[str, Any], through: dict[str, Any], *, denoise: float = 0.5,
                prefix: str = "rel2/v2v") -> dict[str, Any]:
    """The T2V graph with the latent made by ``through`` (node "5", reading images from node "12")."""
    api = t2v_graph(prefix=prefix)
    api["12"] = images_node
    api["5"] = through
    api["8"]["inputs"]["denoise"] = denoise
    return api


def v2v_graph(*, frames: int = 9, size: int = 64, prefix: str = "rel2/v2v", **inputs: Any) -> dict[str, Any]:
    """Core EmptyImage frames -> CogVideoX Video To Video -> sampler (denoise 0.5) -> decode -> save."""
    return from_images(
        {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": frames,
                                                "color": 0x3060C0}},
        {"class_type": "CogVideoXVideoToVideo",
         "inputs": {"vae": ["7", 0], "images": ["12", 0], "width": 64, "height": 64, "resize_mode": "crop",
                    **inputs}},
        prefix=prefix,
    )


def encode_graph(*, frames: int = 9, size: int = 64, prefix: str = "rel2/encode") -> dict[str, Any]:
    """Core EmptyImage frames -> CogVideoX VAE Encode -> sampler (denoise 0.5) -> decode -> save."""
    return from_images(
        {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": frames,
                                                "color": 0x30C060}},
        {"class_type": "CogVideoXVAEEncode",
         "inputs": {"vae": ["7", 0], "images": ["12", 0], "tiling": "off", "tile_size": 256}},
        prefix=prefix,
    )
