"""Print, as JSON, the node ids the pack registers (run inside the ComfyUI tree, not by pytest).

Usage: ``cd build/comfyui && python <this file> <pack dir>``. Imports the pack the way
ComfyUI's ``load_custom_node`` does (as a package from its folder, with ComfyUI's own modules
importable) and prints ``{"nodes": {id: {"display": ..., "category": ..., "v3": ...}}, "classes": [...],
"entrypoint_ids": [...]}`` (``v3``: the class is an ``io.ComfyNode``; ``entrypoint_ids``: the node
ids of ``comfy_entrypoint``'s extension, None without one),
where ``classes`` names every node class (V1: ``INPUT_TYPES`` and ``FUNCTION``; V3: a
``define_schema`` of its own, not only the abstract one of ``io.ComfyNode`` that shared base
classes inherit) defined in the pack's modules, registered or not. This gives the host tests
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
    from comfy_api.internal import first_real_override

    mappings = getattr(module, "NODE_CLASS_MAPPINGS", {})
    names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {})
    from comfy_api.latest import io

    nodes = {
        node_id: {
            "display": names.get(node_id),
            "category": getattr(cls, "CATEGORY", None),
            "v3": isinstance(cls, type) and issubclass(cls, io.ComfyNode),
        }
        for node_id, cls in mappings.items()
    }
    entrypoint = getattr(module, "comfy_entrypoint", None)
    entry_ids = None
    if entrypoint is not None:  # the V3 entry point's node list, as load_custom_node would read it
        import asyncio

        extension = asyncio.run(entrypoint())
        entry_ids = [cls.GET_SCHEMA().node_id for cls in asyncio.run(extension.get_node_list())]
    classes = sorted(
        {
            name
            for mod_name, mod in list(sys.modules.items())
            if mod_name.startswith(spec.name + ".")
            for name, obj in vars(mod).items()
            if isinstance(obj, type)
            and obj.__module__ == mod_name
            and (
                first_real_override(obj, "define_schema") is not None
                if hasattr(obj, "GET_BASE_CLASS")
                else hasattr(obj, "INPUT_TYPES") and hasattr(obj, "FUNCTION")
            )
        }
    )
    sys.stdout.write(json.dumps({"nodes": nodes, "classes": classes, "entrypoint_ids": entry_ids}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
