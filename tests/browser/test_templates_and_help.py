"""The pack in the frontend's own browsers: the template browser lists every shipped workflow
with its thumbnail (``workflows/<name>.jpg``), and a node's info button opens its help page
(``web/docs/<NodeId>.md``) with its pictures."""

from __future__ import annotations

import json

import pytest
from harness import browser as ui
from harness.host import PACK_DIR_NAME
from harness.plugin import REPO_ROOT, ui_workflow_paths

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
STEMS = sorted(p.stem for p in ui_workflow_paths())


def test_the_template_browser_shows_each_template_with_its_thumbnail(comfy_page):
    thumbnails: dict[str, int] = {}
    prefix = f"/api/workflow_templates/{PACK_DIR_NAME}/"

    def record(response) -> None:
        if prefix in response.url and response.url.endswith(".jpg"):
            thumbnails[response.url.rsplit("/", 1)[1]] = response.status

    ui.close_dialogs(comfy_page)
    comfy_page.on("response", record)
    try:
        comfy_page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        dialog = comfy_page.locator(".p-dialog")
        dialog.get_by_text(PACK_DIR_NAME, exact=True).click()  # the pack's entry under EXTENSIONS
        cards = dialog.locator("[data-testid^='template-workflow-']")
        cards.first.wait_for(timeout=30_000)
        # the grid draws a card's picture only while the card is in view: look at each in turn
        images: dict[str, int] = {}
        for i in range(cards.count()):
            card = cards.nth(i)
            card.scroll_into_view_if_needed()
            stem = card.get_attribute("data-testid").removeprefix("template-workflow-")
            card.locator("img").first.wait_for(timeout=30_000)
            comfy_page.wait_for_function(
                "(id) => { const i = document.querySelector(`[data-testid='${id}'] img`);"
                " return i && i.complete && i.naturalWidth > 0; }", arg=f"template-workflow-{stem}", timeout=30_000,
            )
            images[stem] = card.locator("img").first.evaluate("i => i.naturalWidth")
        shown = sorted(t.removeprefix("template-workflow-") for t in cards.evaluate_all(
            "els => els.map(e => e.dataset.testid)"))
        ui.screenshot_keep_dialogs(comfy_page, SCREENSHOTS / "template_browser.png")
    finally:
        comfy_page.remove_listener("response", record)
        close = dialog.locator("button.right-6")  # the dialog's X (Escape does not close this one)
        if close.count():
            close.first.click()
        comfy_page.wait_for_function("() => !document.querySelector('.p-dialog')", timeout=10_000)
    assert shown == STEMS
    assert thumbnails == {f"{stem}.jpg": 200 for stem in STEMS}
    assert images == {stem: 384 for stem in STEMS}, "a card shows no picture (384 px wide thumbnails)"


def test_a_nodes_info_button_opens_its_help_page_with_pictures(comfy_page):
    workflow = json.loads((REPO_ROOT / "workflows" / "text_to_video.json").read_text())
    ui.drop_workflow(comfy_page, workflow, "text_to_video.json")
    ui.close_dialogs(comfy_page)
    with comfy_page.expect_response(lambda r: f"/extensions/{PACK_DIR_NAME}/docs/CogVideoXSampler" in r.url
                                    and r.status == 200) as page_fetch:
        comfy_page.evaluate(
            "() => { const n = app.graph.nodes.find(n => n.type === 'CogVideoXSampler');"
            " app.canvas.centerOnNode(n); app.canvas.selectNode(n); app.canvas.setDirty(true, true); }"
        )
        ui.settle_leaving_masks(comfy_page)
        comfy_page.locator("[data-testid='info-button']").click(timeout=30_000)
    assert page_fetch.value.url.endswith("/docs/CogVideoXSampler.md")
    help_panel = comfy_page.locator(".node-help-content")
    help_panel.get_by_role("heading", name="Inputs").wait_for(timeout=30_000)
    text = help_panel.inner_text()
    assert "CogVideoX Sampler" in text and "denoise" in text and "Outputs" in text
    comfy_page.wait_for_function(
        "() => { const imgs = document.querySelectorAll('.node-help-content img');"
        " return imgs.length >= 2 && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0); }",
        timeout=30_000,
    )
    sources = comfy_page.evaluate(
        "() => Array.from(document.querySelectorAll('.node-help-content img')).map(i => i.src)"
    )
    assert all(f"/extensions/{PACK_DIR_NAME}/docs/images/" in s for s in sources), sources
    ui.screenshot_keep_dialogs(comfy_page, SCREENSHOTS / "help_page.png")
