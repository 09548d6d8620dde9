"""The admins' datasets page in a real browser (issue #13 item 1): an admin signs in over the hub's
login, creates a dataset, adds studies by a rule and grants it to a group, and the grantee sees
the dataset's studies through the gateway at once, without a restart. A non-admin gets 403; a
form posted from another site is refused. Screenshots: tests/artifacts/datasets-admin-*.png."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser

from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port
from medimg_hub.settings import PacsSettings, PlatformSettings, Settings
from tests.browser.harness import external_requests, record_requests, save_screenshot
from tests.hub.hubfixture import Platform, auth, running_platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    var_dir = tmp_path_factory.mktemp("page-var")
    orthanc = OrthancServer(Settings(platform=PlatformSettings(var_dir=var_dir), pacs=PacsSettings(http_port=free_port())))
    orthanc.start()
    try:
        with running_platform(orthanc, tmp_path_factory.mktemp("page-hub")) as running:
            yield running
    finally:
        orthanc.stop()


def visible(platform: Platform, role: str) -> set[str]:
    found = requests.get(f"{platform.hub.platform_url}dicom-web/studies", headers=auth(platform.tokens[role]),
                         timeout=30)
    return {item["0020000D"]["Value"][0] for item in (found.json() if found.status_code == 200 else [])}


def sign_in(browser: Browser, platform: Platform, user: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{platform.hub.url}/hub/login", timeout=TIMEOUT_MS)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "any password: the test hub's DummyAuthenticator")
    page.click("#login_submit")
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    return context, page


def test_an_admin_creates_fills_and_grants_a_dataset_in_the_browser(chromium_browser: Browser,
                                                                   platform: Platform) -> None:
    z1 = platform.studies["z1"].study
    assert z1 not in visible(platform, "other-site")
    context, page = sign_in(chromium_browser, platform, "adam")
    urls = record_requests(page)
    try:
        page.goto(f"{platform.hub.platform_url}admin/datasets", timeout=TIMEOUT_MS)
        page.wait_for_selector("h1:has-text('Datasets')", timeout=TIMEOUT_MS)
        assert page.locator(f"code:has-text('{z1}')").count() == 1  # listed among the studies in no dataset
        save_screenshot(page, "datasets-admin-start")
        new = page.locator("section[aria-labelledby=new-dataset]")
        new.get_by_label("Name", exact=True).fill("referrals")
        new.get_by_label("Description").fill("SITEZ referrals")
        new.get_by_role("button", name="Create").click()
        page.wait_for_selector("p[role=status]:has-text('Dataset referrals created')", timeout=TIMEOUT_MS)
        section = page.locator("section[aria-labelledby=ds-referrals]")
        section.get_by_label("Studies matching").fill("InstitutionName=SITEZ")
        section.get_by_role("button", name="Add rule").click()
        page.wait_for_selector("p[role=status]:has-text('1 studies added')", timeout=TIMEOUT_MS)
        assert z1 not in visible(platform, "other-site")
        section = page.locator("section[aria-labelledby=ds-referrals]")
        section.get_by_label("Group", exact=True).fill("site-b-residents")
        section.get_by_label("Right").select_option("read")
        section.get_by_role("button", name="Grant").click()
        page.wait_for_selector("p[role=status]:has-text('Granted read on referrals to site-b-residents')",
                               timeout=TIMEOUT_MS)
        assert z1 in visible(platform, "other-site")  # the grantee sees it at once
        save_screenshot(page, "datasets-admin-granted")
        # a mistyped group: a clear message, nothing granted
        section = page.locator("section[aria-labelledby=ds-referrals]")
        section.get_by_label("Group", exact=True).fill("site-b-residnts")
        section.get_by_role("button", name="Grant").click()
        page.wait_for_selector("p[role=status].error:has-text(\"no group named 'site-b-residnts'\")",
                               timeout=TIMEOUT_MS)
        assert page.locator("section[aria-labelledby=ds-referrals] tr:has(th:text('read')) td").inner_text().split() \
            == ["site-b-residents", "revoke"]
        assert external_requests(urls) == []
        # the same form posted by another site's page, with the admin's cookies: refused
        forged = context.request.post(f"{platform.hub.platform_url}admin/datasets", form={
            "op": "grant", "dataset": "referrals", "group": "engineers", "right": "read"},
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert forged.status == 403
        assert z1 not in visible(platform, "engineer")
    finally:
        context.close()


def test_the_page_is_for_admins_only(chromium_browser: Browser, platform: Platform) -> None:
    context, page = sign_in(chromium_browser, platform, "eve")
    try:
        response = page.goto(f"{platform.hub.platform_url}admin/datasets", timeout=TIMEOUT_MS)
        assert response is not None and response.status == 403
        assert "Dataset" not in page.content() or "referrals" not in page.content()
    finally:
        context.close()
