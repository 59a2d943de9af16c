"""Security through the real host: the save node cannot write outside the output folder, the
pack talks to nobody while it runs, and ``ruff check --select S`` (bandit rules) is clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from harness import comfy_tree
from harness import reliability_models as rm
from harness.host import ExecutionFailed, PromptRejected, output_files
from harness.reliability import assert_clear_error, assert_still_serves, execution_error, t2v_graph

pytestmark = pytest.mark.host

ROOT = comfy_tree.REPO_ROOT


def _save_graph(prefix: str) -> dict:
    """Nine core frames straight into the save node: no model needed."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 9, "color": 0x3366CC}},
        "2": {
            "class_type": "CogVideoXSaveVideo",
            "inputs": {"fps": 8.0, "filename_prefix": prefix, "format": "mp4 (h264)", "crf": 19, "images": ["1", 0]},
        },
    }


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def outside(comfy_host, tmp_path_factory):
    """Every place a traversal could land, snapshotted: the base folder around output/, its parent,
    and an absolute folder; yields a function returning the files that appeared since."""
    base = comfy_host.base_dir
    absolute = tmp_path_factory.mktemp("abs-target")
    roots = [base.parent, absolute]
    before = {r: _files(r) for r in roots}
    output = (base / "output").resolve()

    def appeared() -> list[Path]:
        new = []
        for root in roots:
            new += [p for p in _files(root) - before[root] if output not in p.resolve().parents]
        return [p for p in new if p.suffix in (".mp4", ".webm") or ".partial-" in p.name]

    appeared.absolute = absolute
    return appeared


@pytest.mark.parametrize(
    "prefix",
    [
        "../../rel_escape",
        "../rel_escape",
        "sub/../../rel_escape",
        "CogVideoX/../../../../rel_escape",
        "{abs}/rel_escape",
    ],
)
def test_filename_prefix_cannot_write_outside_the_output_folder(comfy_client, outside, prefix):
    prefix = prefix.format(abs=outside.absolute)
    with pytest.raises(ExecutionFailed) as failed:
        comfy_client.run(_save_graph(prefix), timeout=120)
    message = assert_clear_error(
        execution_error(failed.value), "CogVideoXSaveVideo", "CogVideoX Save Video", repr(prefix), "CogVideoX/clip"
    )
    assert re.search(r"outside the output folder|relative to the output folder", message), message
    assert outside() == [], f"files appeared outside the output folder: {outside()}"


def test_a_subfolder_prefix_inside_the_output_folder_is_fine(comfy_client, comfy_host, outside):
    entry = comfy_client.run(_save_graph("security/inside/../ok"), timeout=120)
    (record,) = output_files(entry)
    assert record["subfolder"] == "security" and record["filename"].startswith("ok_"), record
    assert (comfy_host.base_dir / "output" / "security" / record["filename"]).is_file()
    assert outside() == []


# ------------------------------------------------------------------ no network while running
def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(m.group(1))
    return inodes


def _remote_peers(pid: int) -> set[str]:
    """Remote addresses of the process's internet sockets that are not loopback or unconnected."""
    mine = _socket_inodes(pid)
    peers = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            remote, inode = fields[2], fields[9]
            if inode not in mine:
                continue
            address = remote.split(":")[0]
            if set(address) == {"0"}:
                continue  # listening / unconnected
            if table.endswith("6"):
                loopback = address in ("00000000000000000000000001000000",) or address.endswith("0100007F")
            else:
                loopback = address.endswith("7F")  # 127.x.x.x, little-endian
            if not loopback:
                peers.add(f"{table} {remote}")
    return peers


def test_the_socket_watcher_sees_a_connection_to_another_host():
    """A UDP socket connected to a TEST-NET address (connect sends nothing) is reported: the watcher works."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError as err:
            pytest.skip(f"no route to build the probe socket: {err}")
        assert any(peer.startswith("udp ") for peer in _remote_peers(os.getpid()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", 9))
        assert _remote_peers(os.getpid()) == set()


def test_no_connection_leaves_the_machine_while_a_prompt_runs(comfy_client, comfy_host):
    rm.ensure_models(comfy_host.base_dir / "models")
    pid = comfy_host.process.pid
    seen: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(_remote_peers(pid))
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        comfy_client.run(t2v_graph(steps=3, seed=31, prefix="security/net"), timeout=300)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert _socket_inodes(pid), "the watcher sees no socket at all (it should see the server's own)"
    assert seen == set(), f"the server talked to other hosts while running the pack: {sorted(seen)}"


def test_unknown_model_names_are_not_fetched_from_anywhere(comfy_client):
    """A model name that is not on disk is rejected up front; nothing is downloaded."""
    api = t2v_graph(model="THUDM/CogVideoX-5b")
    with pytest.raises(PromptRejected) as rejected:
        comfy_client.queue(api)
    errors = rejected.value.node_errors["4"]["errors"]
    # the loader's validate_inputs refuses the name (ComfyUI 0.3.75 checks only V1 combo lists itself)
    assert errors and all(e["type"] == "custom_validation_failed" for e in errors), errors
    assert "model_name='THUDM/CogVideoX-5b' is not one of" in errors[0]["details"], errors
    assert_still_serves(comfy_client, prefix="security/after")


# ------------------------------------------------------------------ static: bandit rules
def test_ruff_security_rules_are_clean_on_the_pack():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (make env installs it)"
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [ruff, "check", "--select", "S", "--no-cache", "cogvideox", "nodes", "__init__.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "All checks passed" in proc.stdout, proc.stdout
