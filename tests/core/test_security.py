"""Security rules for the pack's own code: no network, no eval/exec, no subprocess, no
unpickling. Checked on the source (AST) and at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACK_SOURCES = sorted([ROOT / "__init__.py", *(ROOT / "cogvideox").rglob("*.py"), *(ROOT / "nodes").rglob("*.py")])

NETWORK_MODULES = {
    "socket",
    "ssl",
    "http",
    "urllib",
    "urllib3",
    "requests",
    "aiohttp",
    "httpx",
    "ftplib",
    "smtplib",
    "websocket",
    "websockets",
    "huggingface_hub",
    "xmlrpc",
    "telnetlib",
    "poplib",
    "imaplib",
}
FORBIDDEN_MODULES = NETWORK_MODULES | {"subprocess", "pickle", "cPickle", "dill", "marshal", "shelve"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("path", PACK_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_uses_no_network_subprocess_eval_or_pickle(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [f"line {line}: import {mod}" for line, mod in _imports(tree) if mod in FORBIDDEN_MODULES]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            builtin = isinstance(func, ast.Name) or getattr(getattr(func, "value", None), "id", "") == "builtins"
            if name in FORBIDDEN_CALLS and builtin:  # model.eval() and torch.compile() are fine
                bad.append(f"line {node.lineno}: call {name}()")
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not weights_only or getattr(weights_only[0].value, "value", None) is not True:
                    bad.append(f"line {node.lineno}: torch.load without weights_only=True")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_importing_the_library_loads_no_networking_module():
    """Modules that ``import cogvideox.*`` adds beyond torch's own must not include networking."""
    code = (
        "import sys, torch, einops, safetensors, av, numpy\n"
        "before = set(sys.modules)\n"
        "import importlib, pkgutil, cogvideox\n"
        "for m in pkgutil.iter_modules(cogvideox.__path__):\n"
        "    importlib.import_module('cogvideox.' + m.name)\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    added = {name.split(".")[0] for name in out.stdout.split()}
    assert added & NETWORK_MODULES == set(), f"the library imported {sorted(added & NETWORK_MODULES)}"
    assert "cogvideox" in added
