"""TEST-ONLY STAND-IN for ``torchvision.transforms`` (see ``torchvision/__init__.py``)."""

from torchvision._standin import unavailable

IS_TEST_STANDIN = True


def __getattr__(name: str):
    unavailable("torchvision.transforms", name)
