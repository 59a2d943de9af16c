"""Inputs driven by links, through the real host.

ComfyUI checks a typed widget value against its min/max before the run, but passes ``None`` to
``VALIDATE_INPUTS`` for a linked value and never applies the widget limits to it. The property
checked here, for every pack node input that has a widget a core Primitive node can drive
(INT, FLOAT, BOOLEAN, STRING): the same value typed and linked from PrimitiveInt / PrimitiveFloat
/ PrimitiveBoolean / PrimitiveString gives the same result (the same saved videos, frame for
frame) or the same message (typed: the prompt is refused; linked: the node stops with that text).
Values: the graph's own (valid) value, one step outside each widget limit, and the values the
issue found (fps 5000 / 0 / negative, crf negative, prefix '.', width 64 from a PrimitiveInt...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import reliability_models as rm
from harness.host import PromptRejected
from harness.reliability import assert_clear_error, i2v_graph, t2v_graph
from harness.reliability_links import (
    PRIMITIVES,
    encode_graph,
    failed,
    linked,
    psnr,
    refusal_text,
    saved_videos,
    typed,
    v2v_graph,
)

pytestmark = pytest.mark.host

API_DIR = Path(__file__).resolve().parents[2] / "workflows" / "api"


def _shipped(stem: str) -> Callable[[], dict[str, Any]]:
    """A shipped workflow's API twin (its sampler is node "8", its Save Video node "10")."""
    return lambda: json.loads((API_DIR / f"{stem}.json").read_text())


# node class -> (graph that uses it, its node id in that graph)
GRAPHS: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "CogVideoXEmptyLatent": (t2v_graph, "5"),
    "CogVideoXImageToVideo": (i2v_graph, "6"),
    "CogVideoXVideoToVideo": (v2v_graph, "5"),
    "CogVideoXVAEEncode": (encode_graph, "5"),
    "CogVideoXSampler": (t2v_graph, "8"),
    "CogVideoXVAEDecode": (t2v_graph, "9"),
    "CogVideoXSaveVideo": (t2v_graph, "10"),
    "CogVideoXTextEncode": (t2v_graph, "2"),
    "CogVideoXModelLoader": (t2v_graph, "4"),
    "CogVideoXLoRA": (_shipped("text_to_video_lora"), "6"),
    "CogVideoXFunInpaintConditioning": (_shipped("first_last_frame"), "5"),
    "CogVideoXFunControlConditioning": (_shipped("control_video"), "5"),
    "VideoCrafterFPS": (_shipped("videocrafter_text_to_video"), "6"),
    "VideoCrafterEmptyLatent": (_shipped("videocrafter_text_to_video"), "5"),
    "VideoCrafterSampler": (_shipped("videocrafter_text_to_video"), "8"),
}
NOT_RUNNABLE: set[str] = set()
# Values beyond the widget limits and the graph's own value, per (node, input).
EXTRA: dict[tuple[str, str], list[Any]] = {
    ("CogVideoXEmptyLatent", "width"): [70],
    ("CogVideoXEmptyLatent", "frames"): [10],
    ("CogVideoXVideoToVideo", "height"): [50],
    ("CogVideoXSampler", "denoise"): [float("nan")],
    ("CogVideoXSaveVideo", "fps"): [5000.0, 0.0, -8.0, 12.0],
    ("CogVideoXSaveVideo", "crf"): [-1, 52],
    ("CogVideoXSaveVideo", "filename_prefix"): [".", "rel2/bad\nname", "rel2/links/prefix_ok"],
    ("CogVideoXSaveVideo", "frames_per_video"): [3, 4],
}
# Inputs whose other values cost minutes (torch.compile of every block): only the graph's value.
ONLY_DEFAULT = {("CogVideoXModelLoader", "compile")}
DEFAULT_OF_OPTIONAL = {"cache_threshold": 0.0, "compile": False, "block_swap": 0, "frames_per_video": 0}

_RUNS = iter(range(10**6))


def _widgets(object_info: dict[str, Any], node_class: str) -> dict[str, tuple[str, dict]]:
    spec = object_info[node_class]["input"]
    found = {}
    for group in ("required", "optional"):
        for name, entry in spec.get(group, {}).items():
            kind = entry[0]
            if isinstance(kind, str) and kind in PRIMITIVES:
                found[name] = (kind, entry[1] if len(entry) > 1 else {})
    return found


def _values(node_class: str, name: str, kind: str, options: dict, current: Any) -> list[Any]:
    values = [current]
    if (node_class, name) in ONLY_DEFAULT:
        return values
    step = 1 if kind == "INT" else 0.5
    for bound, sign in (("min", -1), ("max", 1)):
        if bound in options and kind in ("INT", "FLOAT"):
            value = options[bound] + sign * step
            if abs(value) < sys.maxsize:  # the Primitive node itself holds it
                values.append(int(value) if kind == "INT" else float(value))
    values += EXTRA.get((node_class, name), [])
    return values


def _outcome(client, api: dict[str, Any], node: str, display: str, node_class: str):
    """("message", text) when the node refuses (before or during the run), else ("videos", [...])."""
    try:
        prompt_id = client.queue(api)
    except PromptRejected as refusal:
        assert set(refusal.node_errors) == {node}, refusal.node_errors
        return "message", refusal_text(refusal.node_errors, node)
    entry = client.wait(prompt_id, timeout=300, check=False)
    if entry["status"]["status_str"] == "error":
        error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
        assert error["node_id"] == node, error
        return "message", assert_clear_error(error, node_class, display).rstrip("\n")
    videos = saved_videos(client, entry)
    assert videos, entry["outputs"]
    return "videos", [((info.frames, info.width, info.height, round(info.fps, 3)), frames)
                      for _, info, frames in videos]


# The same graph run twice on this CPU differs in the last bits (threaded float sums), which
# h264 turns into small pixel differences: the same result means the same files, frame counts,
# sizes and fps, and frames within 35 dB PSNR (different seeds or prompts are ~10-15 dB apart).
SAME_DB = 35.0


def _same(a, b) -> bool:
    if a[0] != b[0] or a[0] == "message":
        return a == b
    return len(a[1]) == len(b[1]) and all(
        ma == mb and psnr(fa, fb) >= SAME_DB for (ma, fa), (mb, fb) in zip(a[1], b[1], strict=True)
    )


def _shown(outcome) -> str:
    if outcome[0] == "message":
        return repr(outcome[1])
    return str([meta for meta, _ in outcome[1]])


@pytest.fixture(scope="module")
def object_info(comfy_host, comfy_client) -> dict[str, Any]:
    rm.ensure_models(comfy_host.base_dir / "models")
    return comfy_client.object_info()


def test_every_pack_widget_a_primitive_can_drive_is_covered(object_info):
    pack = [c for c, info in object_info.items() if info.get("category", "").startswith("CogVideoX")]
    uncovered = [c for c in pack if _widgets(object_info, c) and c not in GRAPHS and c not in NOT_RUNNABLE]
    assert not uncovered, f"add a graph for {uncovered} to GRAPHS"
    assert set(GRAPHS) <= set(pack)


def _graph(node_class: str, label: str) -> tuple[dict[str, Any], str]:
    make, node = GRAPHS[node_class]
    api = make()
    api["8"]["inputs"]["steps"] = 1
    api["10"]["inputs"]["filename_prefix"] = f"rel2/links/{node_class}_{label}_{next(_RUNS)}"
    return api, node


def _assert_same(label: str, got_typed, got_linked) -> None:
    detail = ""
    if got_typed[0] == got_linked[0] == "videos" and len(got_typed[1]) == len(got_linked[1]):
        pairs = zip(got_typed[1], got_linked[1], strict=True)
        detail = f" (PSNR {[round(psnr(a[1], b[1]), 1) for a, b in pairs]})"
    assert _same(got_typed, got_linked), f"{label}: typed {_shown(got_typed)} != linked {_shown(got_linked)}{detail}"


@pytest.mark.parametrize("node_class", sorted(GRAPHS))
def test_typed_and_linked_values_give_the_same_answer(comfy_client, object_info, node_class):
    """Valid values: all of the node's widget values linked at once give the videos of the typed
    graph (one run per node keeps this lean). Each value outside the limits, and each value of
    EXTRA, alone: typed and linked give the same message (or the same videos)."""
    display = object_info[node_class]["display_name"]
    widgets = _widgets(object_info, node_class)
    typed_api, node = _graph(node_class, "typed")
    all_linked = typed_api
    for name, (kind, _) in widgets.items():
        current = typed_api[node]["inputs"].get(name, DEFAULT_OF_OPTIONAL.get(name))
        typed_api[node]["inputs"][name] = current
        all_linked = linked(all_linked, node, name, kind, current)
    if isinstance(all_linked["10"]["inputs"]["filename_prefix"], str):
        all_linked["10"]["inputs"]["filename_prefix"] += "_linked"
    got_typed = _outcome(comfy_client, typed_api, node, display, node_class)
    assert got_typed[0] == "videos", got_typed
    got_linked = _outcome(comfy_client, all_linked, node, display, node_class)
    _assert_same(f"{node_class} {sorted(widgets)}", got_typed, got_linked)
    cases = 1
    for name, (kind, options) in widgets.items():
        current = typed_api[node]["inputs"][name]
        for value in _values(node_class, name, kind, options, current)[1:]:
            base, node = _graph(node_class, name)
            if name == "filename_prefix":
                del base[node]["inputs"][name]
            label = f"{node_class}.{name}={value!r}"
            got_typed = _outcome(comfy_client, typed(base, node, name, value), node, display, node_class)
            got_linked = _outcome(comfy_client, linked(base, node, name, kind, value), node, display, node_class)
            _assert_same(label, got_typed, got_linked)
            if got_typed[0] == "message":
                assert got_typed[1].startswith(f"{display}: ") and name in got_typed[1], (label, got_typed)
            cases += 1
    assert cases == 1 + sum(len(_values(node_class, n, k, o, None)) - 1 for n, (k, o) in widgets.items())


# ---------------------------------------------------------------- the cases the issue names, exactly
@pytest.mark.parametrize(
    ("api_maker", "node"), [(t2v_graph, "5"), (i2v_graph, "6"), (v2v_graph, "5")],
    ids=["empty-latent", "image-to-video", "video-to-video"],
)
def test_width_64_from_a_primitive_int_runs(comfy_client, object_info, api_maker, node):
    api = linked(api_maker(), node, "width", "INT", 64)
    api["10"]["inputs"]["filename_prefix"] = f"rel2/links/width64_{node}_{api_maker.__name__}"
    entry = comfy_client.run(api, timeout=300)
    ((_, info, _),) = saved_videos(comfy_client, entry)
    assert (info.frames, info.width, info.height) == (rm.FRAMES, 64, 64)


@pytest.mark.parametrize(
    ("name", "kind", "value", "words"),
    [
        ("fps", "FLOAT", 5000.0, "fps=5000 is out of range; use 1 to 120"),
        ("fps", "FLOAT", 0.0, "fps=0 is out of range"),
        ("fps", "FLOAT", -8.0, "fps=-8 is out of range"),
        ("crf", "INT", -1, "crf=-1 is out of range for mp4 (h264); use 0 to 51"),
    ],
)
def test_linked_fps_and_crf_are_refused_with_the_limits(comfy_client, object_info, name, kind, value, words):
    api = linked(t2v_graph(prefix=f"rel2/links/save_{name}"), "10", name, kind, value)
    message = assert_clear_error(failed(comfy_client, api), "CogVideoXSaveVideo", "CogVideoX Save Video", words)
    assert message == f"CogVideoX Save Video: {words}" or message.startswith(f"CogVideoX Save Video: {words}")
