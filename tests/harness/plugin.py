"""Pytest fixtures for the real-ComfyUI tests; ``tests/conftest.py`` makes them global.

* ``comfy_host``: one ComfyUI 0.3.75 server per pytest session, the pack symlinked as
  ``custom_nodes/cogvideox_nodes``, models from :mod:`harness.model_files`.
* ``comfy_client``: a :class:`harness.host.ComfyClient` for it.
* ``pack_probe`` / ``pack_registrations``: the node ids the pack registers (and the node classes
  its modules define), read by importing the pack in a
  separate process inside the ComfyUI tree (independent of ``/object_info``).
* ``shipped_workflows``: the stems of ``workflows/*.json`` (UI) with their API twins.

A failing test that used the host gets the server's log tail in its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import comfy_tree, model_files
from harness.host import ComfyClient, ComfyHost

REPO_ROOT = comfy_tree.REPO_ROOT
WORKFLOWS_DIR = REPO_ROOT / "workflows"
PROBE = Path(__file__).resolve().parent / "probe_pack.py"
HOST_FIXTURES = ("comfy_host", "comfy_client", "browser_page", "comfy_page")

# Settings a returning user would have; they keep first-run dialogs from covering the canvas.
FRONTEND_SETTINGS: dict[str, Any] = {
    "Comfy.TutorialCompleted": True,
    "Comfy.InstalledVersion": "1.32.9",
    "Comfy.Release.Version": "1.32.9",
    "Comfy.Release.Status": "skipped",
}

# Hosts of this session that are (being) started: their logs go into failure reports.
_STARTED_HOSTS: list[ComfyHost] = []


def ui_workflow_paths() -> list[Path]:
    return sorted(WORKFLOWS_DIR.glob("*.json"))


def api_twin(ui_path: Path) -> Path:
    return ui_path.parent / "api" / ui_path.name


@contextlib.contextmanager
def started_host(base: Path, **kwargs: Any) -> Iterator[ComfyHost]:
    """A ComfyUI server on ``base`` with the pack (and ``kwargs`` for :class:`ComfyHost`, e.g.
    ``extra_args``); its log goes into failure reports; stopped on exit."""
    kwargs.setdefault("startup_timeout", float(os.environ.get("COMFY_STARTUP_TIMEOUT", "300")))
    host = ComfyHost(base_dir=base, pack_dir=REPO_ROOT, **kwargs)
    _STARTED_HOSTS.append(host)
    host.start()  # a failed start leaves the host listed, so its log reaches the report
    try:
        yield host
    finally:
        host.stop()
        _STARTED_HOSTS.remove(host)


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyHost]:
    """The session's server: a fresh base directory (nothing in input/), the frontend settings of
    a returning user, models from :mod:`harness.model_files`."""
    base = tmp_path_factory.mktemp("comfy-base")
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(FRONTEND_SETTINGS), encoding="utf-8")
    with started_host(
        base,
        model_files=dict(model_files.MODEL_FILES),
        model_generators=tuple(model_files.MODEL_GENERATORS),
    ) as host:
        yield host


@pytest.fixture(scope="session")
def comfy_client(comfy_host: ComfyHost) -> ComfyClient:
    return comfy_host.client()


def _probe_pack() -> dict[str, Any]:
    comfy_dir = comfy_tree.prepare()
    env = dict(os.environ, PYTHONPATH=str(comfy_tree.TORCHVISION_STANDIN))
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(PROBE), str(REPO_ROOT)],
        cwd=comfy_dir, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"importing the pack inside the ComfyUI tree failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def pack_probe() -> dict[str, Any]:
    """What importing the pack inside the ComfyUI tree shows: ``nodes`` (as the root module
    registers them) and ``classes`` (every node class its modules define)."""
    return _probe_pack()


@pytest.fixture(scope="session")
def pack_registrations(pack_probe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{node_id: {"display": ..., "category": ...}}`` as the pack's root module registers them."""
    return pack_probe["nodes"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not any(name in item.fixturenames for name in HOST_FIXTURES):
        return
    for host in _STARTED_HOSTS:
        report.sections.append(("ComfyUI server log (tail)", host.log_tail(60)))
