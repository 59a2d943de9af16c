"""Print, as JSON, the node ids the pack registers (run inside the ComfyUI tree, not by pytest).

Usage: ``cd build/comfyui && python <this file> <pack dir>``. Imports the pack the way
ComfyUI's ``load_custom_node`` does (as a package from its folder, with ComfyUI's own modules
importable) and prints ``{"nodes": {id: {"display": ..., "category": ...}}, "classes": [...]}``,
where ``classes`` names every node class (V1: ``INPUT_TYPES`` and ``FUNCTION``; V3: a
``define_schema``) defined in the pack's modules, registered or not. This gives the host tests
an account of the pack's registrations independent of ``/object_info``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys


def main(pack_dir: str) -> int:
    sys.path.insert(0, os.getcwd())
    import comfy.options  # ComfyUI's own module, importable from its tree

    # As ComfyUI's main.py does: parse its command line, here a CPU-only one.
    sys.argv = ["main.py", "--cpu"]
    comfy.options.enable_args_parsing()
    init = os.path.join(pack_dir, "__init__.py")
    spec = importlib.util.spec_from_file_location(
        "cogvideox_nodes_probe", init, submodule_search_locations=[pack_dir]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", {})
    names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {})
    nodes = {
        node_id: {"display": names.get(node_id), "category": getattr(cls, "CATEGORY", None)}
        for node_id, cls in mappings.items()
    }
    classes = sorted(
        {
            name
            for mod_name, mod in list(sys.modules.items())
            if mod_name.startswith(spec.name + ".")
            for name, obj in vars(mod).items()
            if isinstance(obj, type)
            and obj.__module__ == mod_name
            and (
                (hasattr(obj, "INPUT_TYPES") and hasattr(obj, "FUNCTION"))
                or callable(getattr(obj, "define_schema", None))
            )
        }
    )
    sys.stdout.write(json.dumps({"nodes": nodes, "classes": classes}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
