"""What VideoCrafter takes from the ``cogvideox`` library instead of copying it.

Inside ComfyUI both packages are subpackages of the node pack (``<pack>.cogvideox``); imported
on their own (tests, tools) they are top-level packages. Only the import path differs.
"""

from __future__ import annotations

try:  # inside the node pack
    from ..cogvideox.configs import _FromDict
    from ..cogvideox.embeddings import timestep_features
    from ..cogvideox.guidance import combine
    from ..cogvideox.samplers import NoiseSampler, randn_noise
    from ..cogvideox.schedules import scaled_linear_betas
except ImportError:  # standalone: the repository root is on sys.path
    from cogvideox.configs import _FromDict
    from cogvideox.embeddings import timestep_features
    from cogvideox.guidance import combine
    from cogvideox.samplers import NoiseSampler, randn_noise
    from cogvideox.schedules import scaled_linear_betas

__all__ = ["NoiseSampler", "_FromDict", "combine", "randn_noise", "scaled_linear_betas", "timestep_features"]
