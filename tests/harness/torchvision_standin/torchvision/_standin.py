"""Shared guard of the TEST-ONLY torchvision stand-in (see ``torchvision/__init__.py``)."""


def unavailable(module: str, name: str):
    if name.startswith("__") and name.endswith("__"):
        # Keep introspection (hasattr(mod, "__wrapped__") etc.) working as for any module.
        raise AttributeError(name)
    raise ImportError(
        f"{module}.{name} is unavailable: this is the test harness's torchvision stand-in "
        "(tests/harness/torchvision_standin), not the real package"
    )
