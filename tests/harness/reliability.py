"""Graphs and checks shared by the reliability tests (bad input, faults, load, security).

The graphs use the ``rel_*`` random-weight models of :mod:`harness.reliability_models`.
"""

from __future__ import annotations

import gc
import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import reliability_models as rm
from harness.host import ComfyClient, ComfyHost, ExecutionFailed

_SEEDS = itertools.count(10_000)


def t2v_graph(
    *,
    model: str = rm.T2V,
    width: int = rm.SIZE,
    height: int = rm.SIZE,
    frames: int = rm.FRAMES,
    batch_size: int = 1,
    steps: int = 2,
    seed: int = 0,
    text: str = "a red square moving right",
    prefix: str = "reliability/t2v",
) -> dict[str, Any]:
    """T5 -> text encode -> model -> empty latent -> sampler -> VAE decode -> save video."""
    return {
        "1": {"class_type": "CogVideoXT5Loader", "inputs": {"t5_name": rm.T5, "weight_dtype": "auto"}},
        "2": {"class_type": "CogVideoXTextEncode", "inputs": {"clip": ["1", 0], "text": text}},
        "3": {"class_type": "CogVideoXTextEncode", "inputs": {"clip": ["1", 0], "text": ""}},
        "4": {"class_type": "CogVideoXModelLoader", "inputs": {"model_name": model, "weight_dtype": "auto"}},
        "5": {
            "class_type": "CogVideoXEmptyLatent",
            "inputs": {"width": width, "height": height, "frames": frames, "batch_size": batch_size},
        },
        "7": {"class_type": "CogVideoXVAELoader", "inputs": {"vae_name": rm.VAE, "weight_dtype": "auto"}},
        "8": {
            "class_type": "CogVideoXSampler",
            "inputs": {
                "seed": seed, "steps": steps, "cfg": 6.0, "scheduler": "auto", "dynamic_cfg": False, "denoise": 1.0,
                "model": ["4", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0],
            },
        },
        "9": {
            "class_type": "CogVideoXVAEDecode",
            "inputs": {"tiling": "off", "tile_size": 256, "vae": ["7", 0], "samples": ["8", 0]},
        },
        "10": {
            "class_type": "CogVideoXSaveVideo",
            "inputs": {"fps": 8.0, "filename_prefix": prefix, "format": "mp4 (h264)", "crf": 19, "images": ["9", 0]},
        },
    }


def i2v_graph(*, model: str = rm.I2V, frames: int = rm.FRAMES, width: int = rm.SIZE, height: int = rm.SIZE,
              steps: int = 2, seed: int = 0, prefix: str = "reliability/i2v") -> dict[str, Any]:
    """The T2V graph with CogVideoX Image To Video (a core EmptyImage as the first frame) before the sampler."""
    api = t2v_graph(model=model, steps=steps, seed=seed, prefix=prefix)
    del api["5"]
    api["11"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0xCC2020}}
    api["6"] = {
        "class_type": "CogVideoXImageToVideo",
        "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "vae": ["7", 0], "image": ["11", 0],
            "width": width, "height": height, "frames": frames, "batch_size": 1, "resize_mode": "crop",
            "noise_aug_strength": 0.0, "noise_aug_mode": "fixed", "image_latent_scaling": "diffusers", "seed": 0,
        },
    }
    api["8"]["inputs"].update(positive=["6", 0], negative=["6", 1], latent=["6", 2])
    return api


def execution_error(failure: ExecutionFailed) -> dict[str, Any]:
    """The ``execution_error`` message ComfyUI recorded for a failed prompt."""
    errors = [m[1] for m in failure.messages if m and m[0] == "execution_error"]
    assert errors, f"no execution_error message in {failure.messages}"
    return errors[0]


def assert_clear_error(error: dict[str, Any], node_type: str, display: str, *needles: str) -> str:
    """The error comes from ``node_type``, is our own error type, names the node and every needle,
    and is a sentence, not a traceback."""
    message = error["exception_message"]
    assert error["node_type"] == node_type, error
    assert error["exception_type"].endswith("CogVideoXNodeError"), (error["exception_type"], message)
    assert message.startswith(f"{display}: "), message
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in {message!r}"
    assert "Traceback" not in message and not re.search(r'File ".*", line \d+', message), message
    assert len(message) < 1500, f"the message is a wall of text ({len(message)} chars)"
    return message


def assert_still_serves(client: ComfyClient, prefix: str = "reliability/after") -> dict[str, Any]:
    """The next prompt (a fresh seed, so the sampler really runs) completes with a video."""
    entry = client.run(t2v_graph(steps=1, seed=next(_SEEDS), prefix=prefix), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = [r for out in entry["outputs"].values() for r in out.get("images", [])]
    assert any(r["filename"].endswith(".mp4") for r in files), entry["outputs"]
    return entry


def rss_bytes(host: ComfyHost) -> int:
    """Resident memory of the ComfyUI server process (VmRSS)."""
    assert host.process is not None
    status = Path(f"/proc/{host.process.pid}/status").read_text()
    kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))
    return kb * 1024


def free_and_settle(client: ComfyClient, host: ComfyHost, timeout: float = 30.0) -> int:
    """``/free`` (unload models, drop caches), then wait until the server's RSS stops falling.

    ComfyUI applies the flags in its prompt worker's idle loop, so RSS is sampled until two
    consecutive readings a second apart agree within 1 % (or the timeout passes).
    """
    client.free()
    gc.collect()
    deadline = time.monotonic() + timeout
    last = rss_bytes(host)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss_bytes(host)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def wait_running(client: ComfyClient, prompt_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(item[1] == prompt_id for item in client.queue_state().get("queue_running", [])):
            return
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} did not start within {timeout:.0f} s")


def run_collecting_ws(
    client: ComfyClient,
    api: dict[str, Any],
    timeout: float = 300.0,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Queue ``api`` and return the JSON messages the server pushed on its websocket for it, in order,
    up to the end of the prompt (what the frontend sees: ``executing``, ``progress``, ...).

    ``on_message(message)`` sees each message as it arrives (e.g. to interrupt at a given point).
    """
    import asyncio

    import aiohttp

    ws_url = client.base_url.replace("http", "ws", 1) + f"/ws?clientId={client.client_id}"

    async def collect() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
            prompt_id = await asyncio.to_thread(client.queue, api)
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue  # binary preview images
                    data = json.loads(msg.data)
                    if data.get("data", {}).get("prompt_id") not in (None, prompt_id):
                        continue
                    messages.append(data)
                    if on_message is not None:
                        on_message(data)
                    if data["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                        return messages
        return messages

    # Its own thread: playwright's sync API (browser tests in the same session) keeps an event
    # loop running in the main thread, where asyncio.run() refuses to start another.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, collect()).result()
