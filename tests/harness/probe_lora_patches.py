"""The CogVideoX LoRA node's patches in ComfyUI's memory manager, checked against the library.

Run inside the ComfyUI tree (``cd build/comfyui && python <this file> <pack dir> <work dir>``),
not by pytest: it imports the pack as ComfyUI does, loads the shipped tiny text-to-video model
with the pack's loader (plain and with block swap), writes a random diffusers LoRA, and runs one
transformer forward inside the sampler's ``_on_device`` for a sequence of LoRA settings on the
same loaded model: none, 1.0, 0.5, 1.0, none, 0.0. Prints JSON with, per step, the largest
difference from the library's own merge (``cogvideox.lora.merge``) at that strength.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys


def _import_pack(pack_dir: str):
    init = os.path.join(pack_dir, "__init__.py")
    spec = importlib.util.spec_from_file_location("cogvideox_nodes_probe", init, submodule_search_locations=[pack_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(pack_dir: str, work: str) -> int:
    sys.path.insert(0, os.getcwd())
    sys.argv = ["main.py", "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths
    import torch
    from safetensors.torch import save_file

    pack = _import_pack(pack_dir)
    sys.path.insert(0, pack_dir)
    from cogvideox import lora as L
    from cogvideox.loading import load_transformer

    sampling = sys.modules["cogvideox_nodes_probe.nodes.sampling"]
    common = sys.modules["cogvideox_nodes_probe.nodes.common"]
    torch.set_num_threads(2)

    folder_paths.add_model_folder_path("loras", work)
    tiny = os.path.join(pack_dir, "tiny", "diffusion_models", "cogvideox_tiny_t2v.safetensors")
    reference, _ = load_transformer(tiny, dtype=torch.float32)
    targets = L.linear_targets(reference)
    gen = torch.Generator().manual_seed(0)
    factors = {}
    for name, (o, i) in sorted(targets.items()):
        factors[f"transformer.{name}.lora_A.weight"] = torch.randn(4, i, generator=gen) * 0.3 / i**0.5
        factors[f"transformer.{name}.lora_B.weight"] = torch.randn(o, 4, generator=gen) * 0.3
    save_file(factors, os.path.join(work, "probe_lora.safetensors"))
    parsed = L.parse_lora(factors, {}, targets)
    x = torch.randn(2, 16, 3, 16, 16, generator=gen)  # the tiny T2V's 128x128 latent
    ctx = torch.randn(2, 226, 64, generator=gen)
    timestep = torch.tensor([900, 300])

    def expected(strength: float) -> torch.Tensor:
        with torch.no_grad():
            return L.merge(copy.deepcopy(reference), parsed, strength)(x, timestep, ctx)

    node = pack.NODE_CLASS_MAPPINGS["CogVideoXLoRA"]
    loader = pack.NODE_CLASS_MAPPINGS["CogVideoXModelLoader"]
    result = {}
    for label, swap in (("plain", 0), ("block_swap", 2)):
        model = loader.execute("cogvideox_tiny_t2v.safetensors", "fp32", block_swap=swap)[0]
        steps = []
        for strength in (None, 1.0, 0.5, 1.0, None, 0.0):
            m = model if strength is None else node.execute(model, "probe_lora.safetensors", strength, "auto")[0]
            with sampling._on_device("probe", m), torch.no_grad():
                out = common.network(m.patcher)(x, timestep, ctx)
            steps.append(
                {
                    "strength": strength,
                    "max_diff_from_merge": (out - expected(strength or 0.0)).abs().max().item(),
                    "max_diff_from_base": (out - expected(0.0)).abs().max().item(),
                    "bit_equal_to_base_merge": bool(torch.equal(out, expected(0.0))),
                }
            )
        result[label] = steps
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
