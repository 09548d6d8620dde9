"""Clinician review end to end, in headless Chromium through the real hub.

A resident logs in over the hub's login page, lands on the Voila worklist, opens the 200-slice
case, scrolls, paints a correction with the brush and proposes it; an attending logs in, opens
the case (starting from the resident's labels) and finalises it. The reviewed SEG in Orthanc
reads back equal to what the resident painted, the job is finished, the audit log holds every
step, the director's statistics page shows the decision, no request left the machine, and
screenshots are saved in tests/artifacts/.

Measured on the way (benchmarks/bench_review.py writes them): time from clicking "Open" until the
whole volume is in the browser (``review_open_case_s``; the first image comes earlier) and
slice-change latency (``review_slice_latency_p95_ms``).
Set ``MEDIMG_REVIEW_TIMINGS=<file>`` to have the timings written there as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from medimg_hub.access.models import AuditEvent, ReviewProposal
from medimg_hub.pipeline.store import TaskStore
from medimg_kernel.review.draft import decode_draft
from medimg_kernel.seg import describe_seg, read_seg
from medimg_kernel.series import read_series
from tests.browser.harness import external_requests, record_requests, save_screenshot, scroll_slices, slice_stats
from tests.browser.review_platform import ReviewPlatform, running_review_platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("playwright", reason="pip package playwright is not installed (requirements.lock)")
from playwright.sync_api import Browser, Page  # noqa: E402

TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewPlatform]:
    with running_review_platform(tmp_path_factory.mktemp("review")) as running:
        yield running


def sign_in(browser: Browser, platform: ReviewPlatform, user: str,
            landmark: str = ".medimg-worklist-row") -> tuple[Page, list[str]]:
    """Log in through the hub's form, start the (only) profile offered, land on the dashboard."""
    page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
    requests_seen = record_requests(page)
    page.goto(f"{platform.url}/hub/login", timeout=TIMEOUT_MS)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", platform.passwords[user])
    page.click("#login_submit")
    page.wait_for_load_state()
    if "/hub/spawn" in page.url and page.locator("input[name=profile]").count():
        page.locator("form#spawn_form input[type=submit], form#spawn_form button[type=submit]").first.click()
    page.wait_for_selector(landmark, timeout=TIMEOUT_MS)
    assert f"/user/{user}/" in page.url
    return page, requests_seen


def open_first_case(page: Page) -> tuple[float, float]:
    """Click "Open" on the first row; seconds until the viewer drew its first image (the three
    preview planes), and until the whole volume was in the browser (every slice scrolls)."""
    started = page.evaluate("performance.now()")
    page.locator(".medimg-worklist-row .medimg-open-case").first.click()
    page.wait_for_function(f"window.__medimgViewer && window.__medimgViewer.volumeAt > {started}"
                           f" && window.__medimgViewer.firstImageAt > {started}", timeout=TIMEOUT_MS, polling=20)
    first, whole = page.evaluate("[window.__medimgViewer.firstImageAt, window.__medimgViewer.volumeAt]")
    return (first - started) / 1000, (whole - started) / 1000


def paint_stroke(page: Page) -> None:
    """Brush a short horizontal stroke across the middle of the axial view (the viewer's own brush tool)."""
    page.wait_for_function("window.__medimgViewer.volumeAt >= window.__medimgViewer.loadAt", timeout=60_000)
    page.locator(".medimg-viewer-tools button", has_text="brush").click()
    box = page.locator('canvas[data-view="axial"]').bounding_box()
    assert box is not None
    x0, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
    page.mouse.move(x0, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x0 + step * 4, y)
    page.mouse.up()
    # the kernel applied the stroke (and saved the draft) when Undo becomes available
    page.wait_for_function("() => [...document.querySelectorAll('.medimg-tools button')]"
                           ".some(b => b.textContent.trim() === 'Undo' && !b.disabled)", timeout=60_000)


def test_resident_proposes_attending_finalises(chromium_browser: Browser, platform: ReviewPlatform) -> None:
    timings: dict[str, float] = {}
    # --- the resident --------------------------------------------------------------------------
    resident, seen_r = sign_in(chromium_browser, platform, "resident-a")
    save_screenshot(resident, "review-1-worklist-resident")
    timings["first_image_s_resident"], timings["open_case_s_resident"] = open_first_case(resident)
    save_screenshot(resident, "review-2-case-resident")
    scroll_slices(resident, "axial", wheel=40, keys=30)
    stats = slice_stats(resident)
    timings.update(slice_changes=stats["count"], slice_median_ms=stats["median_ms"], slice_p95_ms=stats["p95_ms"])
    assert stats["count"] >= 60
    paint_stroke(resident)
    resident.get_by_role("button", name="Propose: Correct & accept").click()
    resident.wait_for_selector("text=waits for an attending", timeout=60_000)
    save_screenshot(resident, "review-3-proposed")
    with Session(platform.engine) as session:
        proposal = session.scalars(select(ReviewProposal).where(ReviewProposal.job_id == platform.job_id)
                                   .options(undefer(ReviewProposal.mask))).one()
        assert proposal.actor == "resident-a" and proposal.decision == "corrected" and proposal.mask
        painted = decode_draft(proposal.mask, series_instance_uid=platform.series,
                               shape=platform.model_labels.shape).labels
    changed = np.argwhere(painted != platform.model_labels)
    assert len(changed) > 0 and len(set(changed[:, 0])) == 1  # one stroke, on one axial slice

    # --- the attending -------------------------------------------------------------------------
    attending, seen_a = sign_in(chromium_browser, platform, "attending-a")
    assert "corrected by resident-a" in attending.locator(".medimg-worklist-row").first.inner_text()
    timings["first_image_s_attending"], timings["open_case_s_attending"] = open_first_case(attending)
    attending.wait_for_selector("text=the proposal of resident-a")
    attending.get_by_role("button", name="Correct & accept", exact=True).click()
    attending.wait_for_selector("text=Finalised as 'corrected'", timeout=120_000)
    save_screenshot(attending, "review-4-finalised")

    # --- what the platform holds now ---------------------------------------------------------------
    store = TaskStore(platform.settings.database_url)
    try:
        job = store.get_job(platform.job_id)
    finally:
        store.close()
    assert job.status.value == "corrected" and job.decided_by == "attending-a"
    outputs = job.outputs
    assert 0 < outputs["dice"]["liver"] <= 1 and outputs["review_time_s"] > 0
    client = platform.pacs.client()
    seg = client.retrieve_instance(platform.study, outputs["series_instance_uids"][0], outputs["seg_sop_instance_uids"][0])
    info = describe_seg(seg)
    assert info.type_id == "organs" and not info.is_model and info.content_creator == "attending-a^"
    volume = read_series(client, platform.study, platform.series)
    assert np.array_equal(read_seg(seg, volume), painted)  # what the resident painted, in the PACS
    with Session(platform.engine) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.user_name.in_(["resident-a", "attending-a"]))).all()
    steps = {(e.user_name, e.action, e.outcome) for e in events}
    for user, action in [("resident-a", "review.worklist"), ("resident-a", "review.claim"),
                         ("resident-a", "review.draft.save"), ("resident-a", "task.propose"),
                         ("attending-a", "review.claim"), ("attending-a", "review.proposal.labels"),
                         ("attending-a", "stow"), ("attending-a", "task.decide")]:
        assert (user, action, "allowed") in steps, (user, action)
    # --- the director sees the decision in the statistics --------------------------------------------
    director, seen_d = sign_in(chromium_browser, platform, "director1", landmark=".medimg-summary")
    summary = director.locator(".medimg-summary").inner_text()
    assert "site-a" in summary and "organ-segmentation v7" in summary and "100%" in summary  # corrected: 100 %
    director.wait_for_selector(".medimg-statistics img", timeout=60_000)  # the plots
    save_screenshot(director, "review-5-statistics")
    assert external_requests(seen_r + seen_a + seen_d) == []
    if os.environ.get("MEDIMG_REVIEW_TIMINGS"):
        with open(os.environ["MEDIMG_REVIEW_TIMINGS"], "w", encoding="utf-8") as out:
            json.dump(timings, out, indent=1)
