"""The real ComfyUI 0.3.75 (``build/comfyui``) and the pack imported into the test process.

For tests that call core's sampling code and our nodes directly (no server: seconds instead of a
30-120 s start): ComfyUI's modules become importable (``comfy.*``, ``folder_paths``, its top-level
``nodes``), its command line is a CPU-only one, and the pack is imported as a package the way
ComfyUI's ``load_custom_node`` does, under the name ``cogvideox_pack``. Idempotent.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from harness import comfy_tree

PACK_NAME = "cogvideox_pack"


def load_pack(args: tuple[str, ...] = ("--cpu",)) -> types.ModuleType:
    """Import ComfyUI and the pack once; return the pack's package module.

    ``args``: ComfyUI's command line for this process (CPU-only by default; the GPU scripts in
    ``tools/gpu`` pass e.g. ``("--lowvram",)``). Only the first call's ``args`` count."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    comfy_dir = comfy_tree.prepare()
    for path in (str(comfy_tree.TORCHVISION_STANDIN), str(comfy_dir)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import comfy.options

    argv = sys.argv
    sys.argv = ["main.py", *args]
    try:
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401 - parses the CPU-only command line now
        import comfy.model_management  # noqa: F401 - picks the CPU as the device
    finally:
        sys.argv = argv
    root = comfy_tree.REPO_ROOT
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
