"""Benchmark row: one VideoCrafter U-Net step, ours (``videocrafter/``) against the reference ``lvdm``.

Imported by ``tools/benchmark.py`` (section ``videocrafter``). Both U-Nets are built from the
same reduced configuration of a released variant (its switches, smaller widths), get the same
random weights (``make_videocrafter_fixtures.randomize``: identical names and shapes give
identical values) and run one CFG step (batch 2) in float32 on the same threads, interleaved
call by call; the outputs are checked to agree before timing.

The reference is AILab-CVC/VideoCrafter, which is not vendored. The row is skipped (with a
message saying how to get it) unless a checkout is found at ``$VIDEOCRAFTER_REFERENCE`` or
``build/VideoCrafter``::

    git clone https://github.com/AILab-CVC/VideoCrafter build/VideoCrafter
    git -C build/VideoCrafter checkout 11bcd76fc62fb98b9715b994afe45b4fa081120c
    python tools/benchmark.py --only videocrafter
"""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
for _path in (ROOT, TOOLS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmark import Row, timed_pair  # noqa: E402

log = logging.getLogger("benchmark.videocrafter")

# (variant, reduced sizes, latent [B, C, T, h, w]); the full run and --quick
CASES = {
    False: [
        ("t2v-512-v2.0", dict(model_channels=64, num_head_channels=32, context_dim=256), (2, 4, 8, 24, 32)),
        ("t2v-1024-v1.0", dict(model_channels=64, num_head_channels=32, context_dim=256), (2, 4, 8, 24, 32)),
    ],
    True: [
        ("t2v-512-v2.0", dict(model_channels=32, num_head_channels=16, context_dim=64,
                              channel_mult=(1, 2), attention_resolutions=(1, 2)), (2, 4, 4, 8, 12)),
    ],
}
TARGET = "<= 0.9x"


def reference_path() -> Path | None:
    """A VideoCrafter checkout with ``lvdm``, or None."""
    candidate = Path(os.environ.get("VIDEOCRAFTER_REFERENCE", ROOT / "build" / "VideoCrafter"))
    return candidate if (candidate / "lvdm" / "modules" / "networks" / "openaimodel3d.py").is_file() else None


def _inputs(cfg, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    b = shape[0]
    x = torch.randn(shape, generator=gen)
    t = torch.tensor([500] * b)
    context = torch.randn(b, 77, cfg.context_dim, generator=gen)
    fps = torch.tensor([8] * b)
    return x, t, context, fps


def bench_videocrafter(quick: bool, repeats: int) -> list[Row]:
    """One U-Net call per variant in ``CASES``: ours / reference time (and the max difference)."""
    reference = reference_path()
    if reference is None:
        log.warning(
            "videocrafter: SKIPPED - the reference sources are absent (set VIDEOCRAFTER_REFERENCE to a checkout "
            "of https://github.com/AILab-CVC/VideoCrafter or clone it to build/VideoCrafter; see "
            "tools/bench_videocrafter.py)"
        )
        return []
    import make_videocrafter_fixtures as fixtures

    from videocrafter.configs import VARIANTS
    from videocrafter.unet import VideoCrafterUNet

    fixtures._install_stubs()
    if str(reference) not in sys.path:
        sys.path.insert(0, str(reference))
    from lvdm.modules.networks.openaimodel3d import UNetModel

    rows = []
    for name, sizes, shape in CASES[quick]:
        cfg = VARIANTS[name].unet.replace(**sizes)
        params = dict(fixtures._reference_config(reference, name)["unet_config"]["params"])
        params.update(sizes, use_checkpoint=False, channel_mult=list(cfg.channel_mult))
        params["attention_resolutions"] = list(cfg.attention_resolutions)
        ref = fixtures.randomize(UNetModel(**params), seed=1).eval()
        ours = fixtures.randomize(VideoCrafterUNet(cfg), seed=1).eval()
        x, t, context, fps = _inputs(cfg, shape)
        kwargs = {"fps": fps} if cfg.fps_cond else {}
        with torch.inference_mode():
            out_ours = ours(x, t, context=context, **kwargs)
            out_ref = ref(x, t, context=context, fps=fps)
            diff = (out_ours - out_ref).abs().max().item() / out_ref.abs().max().item()
            if diff > 1e-3:
                raise RuntimeError(f"videocrafter {name}: ours differs from the reference by {diff:.2e} (relative)")
            t_ours, t_ref = timed_pair(partial(ours, x, t, context=context, **kwargs),
                                       partial(ref, x, t, context=context, fps=fps), repeats)
        b, c, f, h, w = shape
        what = (f"VideoCrafter U-Net step ({name} switches, model_channels {cfg.model_channels}, "
                f"latent {b}x{c}x{f}x{h}x{w}, CFG batch) vs reference lvdm")
        rows.append(Row(what, f"time per call (max rel. diff {diff:.1e})", t_ours, t_ref, "s", TARGET))
        log.info("%s", rows[-1].markdown())
    return rows
