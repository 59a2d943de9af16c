"""Step caching (TeaCache-like): skip the transformer blocks on steps whose input barely moved.

At every step the timestep-modulated input of the first block (``first_block_modulated_input``:
the video tokens after block 0's adaptive norm, ``[B, N, D]``) is compared with the one of the
previous step: the relative L1 change ``mean|m_t - m_{t-1}| / mean|m_{t-1}|`` (optionally passed
through a rescaling polynomial) is accumulated. While the accumulated change stays below
``threshold`` the blocks are skipped and the video tokens leaving the block stack are the
entering tokens plus the residual (output - input of the block stack) of the last computed
step. When it reaches the threshold the blocks run, the residual is refreshed and the
accumulator is reset. The first and the last step always run.

The indicator, the decision and the residual cover the whole network batch (with CFG: the
unconditional and conditional halves together), so both halves skip together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .pipeline import Denoiser
from .transformer import CogVideoXTransformer, Tokens

log = logging.getLogger(__name__)


class StepCache:
    """The cache state of one sampling run; a ``CogVideoXTransformer.step_cache`` callable.

    ``threshold``: accumulated relative L1 change below which a step reuses the residual
    (0 = never skip). ``rescale``: polynomial coefficients (highest power first) applied to the
    relative change before accumulating, or None for the raw change.
    """

    def __init__(self, threshold: float, num_steps: int, rescale: Sequence[float] | None = None):
        if threshold < 0:
            raise ValueError(f"cache threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)
        self.num_steps = num_steps
        self.rescale = tuple(rescale) if rescale is not None else None
        self.step = 0
        self.accumulated = 0.0
        self.previous: torch.Tensor | None = None  # modulated input of the previous step [B, N, D]
        self.residual: torch.Tensor | None = None  # video out - video in of the last computed step
        self.computed: list[int] = []
        self.skipped: list[int] = []

    def _change(self, current: torch.Tensor) -> float:
        prev = self.previous
        rel = ((current - prev).abs().mean() / prev.abs().mean().clamp_min(1e-12)).item()
        if self.rescale is not None:
            rel = sum(c * rel**k for k, c in enumerate(reversed(self.rescale)))
        return abs(rel)

    def should_compute(self, current: torch.Tensor, batch_shape: torch.Size) -> bool:
        edge = self.step == 0 or self.step >= self.num_steps - 1
        if edge or self.previous is None or self.residual is None or self.residual.shape != batch_shape:
            return True
        self.accumulated += self._change(current)
        return self.accumulated >= self.threshold

    def __call__(self, model: CogVideoXTransformer, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        current = model.first_block_modulated_input(tokens)  # [B, N, D] float32
        compute = self.should_compute(current, tokens.video.shape)
        self.previous = current
        if not compute:
            self.skipped.append(self.step)
            residual = self.residual.to(tokens.video.device)
            return tokens.video + residual, tokens.text
        self.accumulated = 0.0
        self.computed.append(self.step)
        video, text = model.run_all_blocks(tokens)
        self.residual = (video - tokens.video.to(video.device)).detach()  # [B, N, D]
        return video, text


class CachedDenoiser(Denoiser):
    """A ``Denoiser`` whose network calls go through a ``StepCache`` (see the module docstring).

    The model must be a ``CogVideoXTransformer``: the cache needs its staged forward. The
    cache is installed on ``model.step_cache`` for the duration of each call only.
    """

    def __init__(self, *args, threshold: float, rescale: Sequence[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, CogVideoXTransformer):
            raise TypeError(f"step caching needs a CogVideoXTransformer, got {type(self.model).__name__}")
        self.cache = StepCache(threshold, len(self.schedule), rescale)

    def velocity(self, x: torch.Tensor, i: int) -> torch.Tensor:
        self.cache.step = i
        model = self.model
        previous_hook = model.step_cache
        model.step_cache = self.cache
        try:
            return super().velocity(x, i)
        finally:
            model.step_cache = previous_hook

    def report(self) -> str:
        c = self.cache
        return f"step cache: ran {len(c.computed)} of {len(c.computed) + len(c.skipped)} steps (skipped {c.skipped})"
