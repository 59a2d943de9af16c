"""Model files the test ComfyUI host sees under ``<base>/models/`` before it starts.

Extend these two tables; the ``comfy_host`` fixture applies them once per pytest session.

``MODEL_FILES`` maps a path under ``models/`` (``"<folder>/<name>"``, e.g.
``"diffusion_models/cogvideox-tiny.safetensors"``) to a file in this repository
(repo-relative or absolute); the file is symlinked in, never copied.

``MODEL_GENERATORS`` lists callables ``generate(models_dir: pathlib.Path) -> None`` that write
files generated at test time (e.g. a tiny random checkpoint) into ``models_dir/<folder>/``.
Write them as plain functions in an importable test module and list them here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness import lora_files

MODEL_FILES: dict[str, str] = {}

MODEL_GENERATORS: list[Callable[[Path], None]] = [lora_files.generate]
