"""TEST-ONLY STAND-IN for torchvision. Not the real package; never shipped with the pack.

PyPI only carries CUDA builds of torchvision, which cannot be imported next to the CPU torch
wheel the test environment uses. ComfyUI 0.3.75 imports torchvision (and
``torchvision.transforms``) at start-up for model families this pack never loads (Stable
Cascade, Cosmos, ACE) and only touches it inside their functions. The test harness puts this
folder on the PYTHONPATH of the ComfyUI host process only, so the server can start; any real
use of torchvision raises ImportError, so nothing can silently depend on it. The pack itself
never imports torchvision.
"""

from torchvision import transforms  # noqa: F401 - the stand-in submodule, for `from torchvision import transforms`
from torchvision._standin import unavailable

IS_TEST_STANDIN = True


def __getattr__(name: str):
    unavailable("torchvision", name)
