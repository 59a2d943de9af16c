"""A real ComfyUI server process with the pack installed, and a small HTTP client for it."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from harness import comfy_tree

log = logging.getLogger(__name__)

PACK_DIR_NAME = "cogvideox_nodes"
BASE_SUBDIRS = ("custom_nodes", "models", "input", "output", "user", "temp")


class ComfyError(RuntimeError):
    """Base class for errors reported by the ComfyUI host."""


class PromptRejected(ComfyError):
    """``POST /prompt`` answered 400: the graph failed ComfyUI's validation."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        self.error: dict[str, Any] = body.get("error") or {}
        self.node_errors: dict[str, Any] = body.get("node_errors") or {}
        super().__init__(
            f"ComfyUI rejected the prompt ({status}): {self.error.get('message', '')} "
            f"{self.error.get('details', '')} node_errors={json.dumps(self.node_errors)[:2000]}"
        )


class ExecutionFailed(ComfyError):
    """The prompt was accepted but its execution ended in an error."""

    def __init__(self, prompt_id: str, entry: dict[str, Any]):
        self.prompt_id = prompt_id
        self.entry = entry
        self.messages = entry.get("status", {}).get("messages", [])
        details = [m[1] for m in self.messages if m and m[0] == "execution_error"]
        super().__init__(f"prompt {prompt_id} failed: {json.dumps(details)[:3000]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def combo_choices(spec: list) -> list[Any]:
    """The options of a combo input's ``/object_info`` spec: V3 writes ``["COMBO", {"options": [...]}]``,
    V1 ``[[...], {...}]``; an error for any other input."""
    if spec[0] == "COMBO":
        return list(spec[1]["options"])
    if isinstance(spec[0], list):
        return list(spec[0])
    raise TypeError(f"not a combo input: {spec!r}")


class ComfyClient:
    """Talks to ComfyUI's HTTP API the way the frontend and scripts do."""

    def __init__(self, base_url: str, client_id: str | None = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.session = requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def get_json(self, path: str, **params: Any) -> Any:
        resp = self.session.get(self._url(path), params=params or None, timeout=self.timeout)
        resp.raise_for_status()
        return resp.json()

    def system_stats(self) -> dict[str, Any]:
        return self.get_json("/system_stats")

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return self.get_json(f"/object_info/{node_class}" if node_class else "/object_info")

    def choices(self, node_class: str, input_name: str) -> list[Any]:
        """The options of a combo input as ``/object_info`` lists them now."""
        inputs = self.object_info(node_class)[node_class]["input"]
        return combo_choices({**inputs.get("required", {}), **inputs.get("optional", {})}[input_name])

    def queue(self, prompt_api: Mapping[str, Any], extra_data: Mapping[str, Any] | None = None) -> str:
        """Queue an API-format graph; return its prompt id or raise :class:`PromptRejected`."""
        payload: dict[str, Any] = {"prompt": dict(prompt_api), "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        # json.dumps, not requests' json=: a NaN value (allowed by ComfyUI's parser) must reach the host
        resp = self.session.post(self._url("/prompt"), data=json.dumps(payload), timeout=self.timeout,
                                 headers={"Content-Type": "application/json"})
        if resp.status_code == 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"error": {"message": resp.text}}
            raise PromptRejected(resp.status_code, body)
        resp.raise_for_status()
        return resp.json()["prompt_id"]

    def history(self, prompt_id: str | None = None) -> dict[str, Any]:
        return self.get_json(f"/history/{prompt_id}" if prompt_id else "/history")

    def queue_state(self) -> dict[str, Any]:
        return self.get_json("/queue")

    def wait(self, prompt_id: str, timeout: float = 600.0, check: bool = True,
             poll: float = 0.25) -> dict[str, Any]:
        """Poll ``/history`` until the prompt finished; return its history entry.

        With ``check`` an execution error raises :class:`ExecutionFailed`.
        """
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id).get(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if check and status.get("status_str") == "error":
                    raise ExecutionFailed(prompt_id, entry)
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            time.sleep(poll)

    def run(self, prompt_api: Mapping[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        return self.wait(self.queue(prompt_api), timeout=timeout)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        resp = self.session.get(
            self._url("/view"),
            params={"filename": filename, "subfolder": subfolder, "type": type},
            timeout=self.timeout,
        )
        resp.raise_for_status()
        return resp.content

    def interrupt(self) -> None:
        self.session.post(self._url("/interrupt"), timeout=self.timeout).raise_for_status()

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self.session.post(
            self._url("/free"),
            json={"unload_models": unload_models, "free_memory": free_memory},
            timeout=self.timeout,
        ).raise_for_status()

    def upload_image(self, path: Path | str, subfolder: str = "", overwrite: bool = True) -> dict[str, Any]:
        path = Path(path)
        with path.open("rb") as fh:
            resp = self.session.post(
                self._url("/upload/image"),
                files={"image": (path.name, fh, "application/octet-stream")},
                data={"subfolder": subfolder, "type": "input", "overwrite": str(overwrite).lower()},
                timeout=self.timeout,
            )
        resp.raise_for_status()
        return resp.json()


def output_files(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every file record (``filename``, ``subfolder``, ``type``) in a history entry's outputs."""
    files = []
    for node_out in entry.get("outputs", {}).values():
        for value in node_out.values():
            if isinstance(value, list):
                files.extend(v for v in value if isinstance(v, dict) and "filename" in v)
    return files


@dataclass
class ComfyHost:
    """Owns one ComfyUI server process started on a fresh base directory."""

    base_dir: Path
    pack_dir: Path
    model_files: Mapping[str, Path] = field(default_factory=dict)
    model_generators: Iterable[Callable[[Path], None]] = ()
    input_dirs: Iterable[Path] = ()  # every file in these is copied into <base>/input/
    comfy_dir: Path = comfy_tree.DEFAULT_DEST
    port: int = 0
    startup_timeout: float = 240.0
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    startup_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> ComfyClient:
        return ComfyClient(self.url)

    def prepare_base_dir(self) -> None:
        for sub in BASE_SUBDIRS:
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(self.pack_dir.resolve(), target_is_directory=True)
        models = self.base_dir / "models"
        for rel, src in self.model_files.items():
            src = Path(src)
            if not src.is_absolute():
                src = self.pack_dir / src
            if not src.is_file():
                raise FileNotFoundError(f"model file for models/{rel} not found: {src}")
            dst = models / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
        for generate in self.model_generators:
            generate(models)
        for folder in self.input_dirs:
            for src in sorted(Path(folder).glob("*")):
                if src.is_file():
                    shutil.copy2(src, self.base_dir / "input" / src.name)

    def start(self) -> None:
        self.comfy_dir = comfy_tree.prepare(self.comfy_dir)
        self.prepare_base_dir()
        self.port = self.port or free_port()
        self.log_path = self.base_dir / "comfyui.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(comfy_tree.TORCHVISION_STANDIN), env.get("PYTHONPATH", "")) if p
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["HF_HUB_OFFLINE"] = "1"
        env["DO_NOT_TRACK"] = "1"
        cmd = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--disable-auto-launch", "--disable-api-nodes",
            "--log-stdout", "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            *self.extra_args,
        ]
        log.info("starting ComfyUI: %s", " ".join(cmd))
        started = time.monotonic()
        with self.log_path.open("wb") as log_fh:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd, cwd=self.comfy_dir, env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        atexit.register(self.stop)  # also when pytest is stopped without running fixture teardown
        client = ComfyClient(self.url, timeout=5)
        deadline = started + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise ComfyError(
                    f"ComfyUI exited with {self.process.returncode} during start-up:\n{self.log_tail()}"
                )
            try:
                client.system_stats()
                break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ComfyError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - started
        log.info("ComfyUI answered after %.1f s on %s", self.startup_seconds, self.url)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def import_failures(self) -> list[str]:
        """Log lines in which ComfyUI reports that this pack failed to import."""
        return [
            line for line in self.log_text().splitlines()
            if PACK_DIR_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line)
        ]

    def clear_output(self) -> None:
        out = self.base_dir / "output"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
