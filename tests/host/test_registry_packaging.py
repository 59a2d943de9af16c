"""Registry packaging with the ecosystem's own tool: comfy-cli (``comfy node validate`` and
``comfy node pack``), offline. The zip must hold the runtime and the tiny model, and no tests,
tools or CI files (``.comfyignore``); docs/registry.md lists what it holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
COMFY = Path(sys.executable).parent / "comfy"
# Left out of the zip by .comfyignore (prefixes of repo paths).
LEFT_OUT = ("tests/", "tools/", ".ci/", ".github/", "Makefile", ".gitignore", ".comfyignore")
RUNTIME = {"__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE", "web/icon.png"}

pytestmark = pytest.mark.skipif(not COMFY.exists(), reason="comfy-cli (tools/requirements-test.txt) is not installed")


def _comfy(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DO_NOT_TRACK="1", HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return subprocess.run(  # noqa: S603 - fixed argv
        [str(COMFY), "--skip-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)  # noqa: S607
    return [p for p in out.stdout.decode().split("\0") if p and (ROOT / p).is_file()]


def test_comfy_node_validate_passes_without_warnings(tmp_path):
    proc = _comfy(["node", "validate"], ROOT, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "All validation checks passed" in out and "Warning" not in out, out


def test_the_registry_metadata_is_complete():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    urls, comfy = meta["project"]["urls"], meta["tool"]["comfy"]
    assert {"Homepage", "Issues"} <= set(urls) and "Bug Tracker" not in urls
    assert comfy["requires-comfyui"].startswith(">=")
    classifiers = meta["project"]["classifiers"]
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert any(c.startswith("Environment :: GPU :: ") for c in classifiers)
    # the Icon URL points at a file of this repository (raw GitHub URL of the main branch)
    icon = comfy["Icon"].split("/main/", 1)[1]
    assert icon in _tracked(), icon
    with Image.open(ROOT / icon) as image:
        assert image.format == "PNG" and image.width == image.height <= 400


def test_comfy_node_pack_ships_the_runtime_and_the_tiny_model_only(tmp_path):
    # a copy of the tracked files in a fresh git repository: pack zips what git tracks, into the cwd
    repo = tmp_path / "repo"
    tracked = _tracked()
    for rel in tracked:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)  # noqa: S607
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)  # noqa: S607
    proc = _comfy(["node", "pack"], repo, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(repo / "node.zip") as zf:
        names = set(zf.namelist())
    assert names == {p for p in tracked if not p.startswith(LEFT_OUT)}
    assert not {n for n in names if n.startswith(LEFT_OUT)}
    assert RUNTIME <= names
    runtime_dirs = ("nodes/", "cogvideox/", "videocrafter/", "tiny/", "web/docs/")
    assert {p for p in tracked if p.startswith(runtime_dirs)} <= names
    stems = [p.stem for p in (ROOT / "workflows").glob("*.json")]
    assert {f"workflows/{s}.jpg" for s in stems} | {f"workflows/api/{s}.json" for s in stems} <= names
    # the tiny model's files (tiny/) and nothing else: no test fixtures (tests/fixtures holds some)
    shipped = {n for n in names if n.endswith(".safetensors")}
    assert shipped and all(n.startswith("tiny/") for n in shipped), sorted(shipped)
    assert shipped == {p for p in tracked if p.startswith("tiny/") and p.endswith(".safetensors")}
