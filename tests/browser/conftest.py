"""Headless Chromium on the session's ComfyUI host (shared with the host tests)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest
from harness import browser as ui

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    path = ui.chromium_path()
    if path is None:
        pytest.skip("chromium is not installed and `make env` could not install it (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, \
            sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=path, headless=True, args=list(ui.CHROMIUM_ARGS),
            viewport=ui.VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def comfy_page(chromium, comfy_host):
    """One frontend tab for the session; each test drops its workflow into a new workflow tab."""
    page = chromium.new_page()
    ui.open_frontend(page, comfy_host.url)
    return page
