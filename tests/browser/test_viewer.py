"""The review slice viewer in Voila, offline, in headless Chromium.

``tests/fixtures/dashboards/viewer_demo.ipynb`` builds a synthetic 200 × 256 × 256 CT-like case
with two segments and shows a :class:`SliceViewer` linked to a :class:`LabelEditor`; it displays
the editor's label counts (JSON) in a ``.medimg-demo-label-counts`` label, so the test can see
that an edit made with the mouse reached the kernel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser.harness import (
    FIXTURE_DASHBOARDS,
    external_requests,
    open_viewer,
    record_requests,
    save_screenshot,
    scroll_slices,
    slice_stats,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NOTEBOOK = FIXTURE_DASHBOARDS / "viewer_demo.ipynb"
#: Loose bound against regressions on a busy 2-core CI machine; the goal (p95 < 50 ms) is
#: measured by benchmarks/bench_viewer.py.
SANITY_P95_MS = 150.0


#: The demo's liver colour (#e6194b), and a count of canvas pixels of exactly one colour.
LIVER_RGB = (0xE6, 0x19, 0x4B)
COUNT_JS = ("(c, rgb) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; "
            "for (let i = 0; i < d.length; i += 4) if (d[i] === rgb[0] && d[i + 1] === rgb[1] && d[i + 2] === rgb[2]) n++; "
            "return n; }")


def exact_colour_pixels(page: Page, rgb: tuple[int, int, int]) -> int:
    return int(page.locator('canvas[data-view="axial"]').evaluate(f"(c, rgb) => ({COUNT_JS})(c, rgb)", list(rgb)))


def label_counts(page: Page) -> dict[str, int]:
    return json.loads(page.locator(".medimg-demo-label-counts").inner_text())


def test_viewer_offline_scroll_and_paint(page: Page, voila_server: Callable[[Path], str]) -> None:
    urls = record_requests(page)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    url = voila_server(NOTEBOOK)
    timing = open_viewer(page, url)
    assert timing["firstImageAt"] > 0
    for view in ("axial", "coronal", "sagittal"):
        canvas = page.locator(f'canvas.medimg-viewer-canvas[data-view="{view}"]')
        assert canvas.evaluate("c => c.width > 100 && c.height > 100"), f"{view} canvas has no size"
    status = page.locator(".medimg-viewer-status").inner_text()
    assert "axial 101/200" in status, status

    # outline / fill (#19 item 2): outlines are drawn in the segment's own colour, opaque; filled
    # segments are blended with the image at the overlay's opacity, so that colour appears nowhere
    assert exact_colour_pixels(page, LIVER_RGB) == 0
    page.locator(".medimg-viewer-outline").click()
    page.wait_for_function(f"() => ({COUNT_JS})(document.querySelector('canvas[data-view=\"axial\"]'), "
                           f"{list(LIVER_RGB)}) > 0", timeout=30_000)
    outline = exact_colour_pixels(page, LIVER_RGB)
    save_screenshot(page, "viewer_demo_outline")
    page.locator(".medimg-viewer-outline").click()
    page.wait_for_function(f"() => ({COUNT_JS})(document.querySelector('canvas[data-view=\"axial\"]'), "
                           f"{list(LIVER_RGB)}) === 0", timeout=30_000)
    assert outline > 20, outline
    save_screenshot(page, "viewer_demo_fill")

    scroll_slices(page, "axial", wheel=30, keys=30)
    stats = slice_stats(page)
    assert stats["count"] >= 60, stats
    assert "axial 161/200" in page.locator(".medimg-viewer-status").inner_text()
    assert stats["p95_ms"] < SANITY_P95_MS, stats

    before = label_counts(page)
    page.locator('.medimg-viewer-tool[data-tool="brush"]').click()
    box = page.locator('canvas[data-view="axial"]').bounding_box()
    assert box is not None
    # A stroke across the right half of the image (patient left; the liver is on the image left).
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.55, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.55 + 0.02 * step), y)
    page.mouse.up()
    page.wait_for_function(
        "before => JSON.parse(document.querySelector('.medimg-demo-label-counts').innerText)['1'] > before",
        arg=before["1"], timeout=30_000)
    after = label_counts(page)
    assert after["1"] > before["1"] and after["2"] == before["2"], (before, after)
    save_screenshot(page, "viewer_demo")

    assert external_requests(urls) == [], "requests left the machine"
    assert errors == [], "JavaScript errors on the page"
