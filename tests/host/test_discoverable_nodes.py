"""The pack's node ids can be read from its source without importing it.

ComfyUI-Manager's scanner (ltdrdata/ComfyUI-Manager, scanner.py) walks a pack's ``.py`` files
and takes the keys of a module-level ``NODE_CLASS_MAPPINGS = {"Id": Class, ...}`` dict display
(string keys; a comprehension or a ``dict(...)`` call gives it nothing). The reader below does
the same from the syntax tree; the tests compare what it finds with what importing the pack in
the ComfyUI tree registers and with every node class the pack's modules define.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_SKIP = {"tests", "tools", "build", ".venv", ".git", "workflows", "tiny"}


def static_node_ids(source: str) -> dict[str, str | None]:
    """``{node_id: class name written as its value}`` of the module-level dict display assigned
    to ``NODE_CLASS_MAPPINGS``; empty when there is none or it is not a literal."""
    for stmt in ast.parse(source).body:
        if not (isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "NODE_CLASS_MAPPINGS" for t in stmt.targets
        )):
            continue
        if not isinstance(stmt.value, ast.Dict):
            return {}
        return {
            key.value: (value.id if isinstance(value, ast.Name) else None)
            for key, value in zip(stmt.value.keys, stmt.value.values, strict=True)
            if isinstance(key, ast.Constant) and isinstance(key.value, str)
        }
    return {}


def pack_sources() -> list[Path]:
    return sorted(
        p for p in ROOT.rglob("*.py") if not (set(p.relative_to(ROOT).parts[:-1]) & RUNTIME_SKIP)
    )


def scanned_ids() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for path in pack_sources():
        found.update(static_node_ids(path.read_text(encoding="utf-8")))
    return found


def test_the_node_ids_are_a_literal_the_scanner_reads():
    found = scanned_ids()
    assert found, "no NODE_CLASS_MAPPINGS dict literal in the pack's source"
    # Node id == class name: keeps the one-line entry honest and saved workflows' types stable.
    assert {k: v for k, v in found.items() if k != v} == {}


def test_the_literal_equals_what_the_pack_registers_and_every_node_class_it_defines(pack_probe):
    found = set(scanned_ids())
    registered = set(pack_probe["nodes"])
    defined = set(pack_probe["classes"])
    assert registered <= defined, f"the probe missed node classes: {sorted(registered - defined)}"
    assert found == registered, (
        f"in the literal but not registered: {sorted(found - registered)}; "
        f"registered but not in the literal: {sorted(registered - found)}"
    )
    assert defined - registered == set(), (
        f"node classes defined but not in NODE_CLASS_MAPPINGS (add one line to nodes/__init__.py): "
        f"{sorted(defined - registered)}"
    )


def test_the_reader_finds_nothing_in_a_comprehension_and_sees_a_missing_line():
    literal = (ROOT / "nodes" / "__init__.py").read_text(encoding="utf-8")
    assert "CogVideoXSampler" in static_node_ids(literal)
    assert static_node_ids("NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _NODES}\n") == {}
    dropped = literal.replace('    "CogVideoXSampler": CogVideoXSampler,\n', "")
    assert "CogVideoXSampler" not in static_node_ids(dropped)


def test_core_video_types_come_from_comfy_api_latest():
    """``comfy_api.input_impl`` is the backwards-compatibility module; ``comfy_api.latest`` the API."""
    offenders = [
        str(p.relative_to(ROOT)) for p in pack_sources()
        if any(
            isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comfy_api")
            and not (node.module or "").startswith("comfy_api.latest")
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        )
    ]
    assert offenders == []
