"""Writes what a real ComfyUI 0.3.75 host says about the pack's nodes (``GET /object_info``).

Starts the host the way the test session does (fresh base directory, the models of
``tests/harness/model_files.py``) and writes ``{node_id: object_info entry}`` for every node of
the pack, sorted, as JSON. ``tests/host/test_node_contract.py`` compares the running host with
the committed snapshot; rewrite it only when a node's schema changes on purpose:

    .venv/bin/python tools/dump_object_info.py tests/fixtures/object_info_nodes.json

Also the before/after check of a refactoring: dump before, dump after, ``diff`` the two.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import model_files  # noqa: E402
from harness.host import ComfyHost  # noqa: E402

PACK_PREFIXES = ("CogVideoX", "VideoCrafter")


def pack_object_info(info: dict) -> dict:
    """The pack's entries of an ``/object_info`` answer, sorted by node id."""
    return {k: info[k] for k in sorted(info) if k.startswith(PACK_PREFIXES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON file to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with tempfile.TemporaryDirectory(prefix="comfy-dump-") as base:
        host = ComfyHost(
            base_dir=Path(base), pack_dir=ROOT, model_files=dict(model_files.MODEL_FILES),
            model_generators=tuple(model_files.MODEL_GENERATORS), startup_timeout=400.0,
        )
        host.start()
        try:
            info = pack_object_info(host.client().object_info())
        finally:
            host.stop()
    args.out.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    logging.info("wrote %d nodes to %s", len(info), args.out)


if __name__ == "__main__":
    main()
