"""Datasets administered through the platform API (issue #13 item 1), against a real hub, CHP, the
platform API and Orthanc: an admin creates a dataset, fills it by a rule and grants it, and the
grantee sees its studies through the DICOMweb gateway at once, without a restart; arrivals that
match the rule join within ``[platform] dataset_rules_interval_s``; the API is refused to others."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port
from medimg_hub.settings import PacsSettings, PlatformSettings, Settings

from .hubfixture import Platform, audit_rows, auth, make_study, running_platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own (its own Orthanc): these tests change datasets the other modules rely on."""
    var_dir = tmp_path_factory.mktemp("admin-var")
    orthanc = OrthancServer(Settings(platform=PlatformSettings(var_dir=var_dir), pacs=PacsSettings(http_port=free_port())))
    orthanc.start()
    try:
        with running_platform(orthanc, tmp_path_factory.mktemp("admin-hub"), dataset_rules_interval_s=1.0) as running:
            yield running
    finally:
        orthanc.stop()


def api(platform: Platform, method: str, path: str, role: str = "admin", **kwargs: object) -> requests.Response:
    return requests.request(method, f"{platform.hub.platform_url}api/{path}", headers=auth(platform.tokens[role]),
                            timeout=30, **kwargs)  # type: ignore[arg-type]


def visible(platform: Platform, role: str) -> set[str]:
    """StudyInstanceUIDs the role's QIDO-RS through the gateway returns."""
    found = requests.get(f"{platform.hub.platform_url}dicom-web/studies", headers=auth(platform.tokens[role]),
                         timeout=30)
    assert found.status_code in (200, 204), found.text
    return {item["0020000D"]["Value"][0] for item in (found.json() if found.status_code == 200 else [])}


def test_only_admins_administer(platform: Platform) -> None:
    for role in ("engineer", "director", "resident"):
        assert api(platform, "GET", "datasets", role).status_code == 403
        assert api(platform, "POST", "datasets", role, json={"name": "mine"}).status_code == 403
    assert api(platform, "POST", "datasets/site-a/grants", "engineer",
               json={"group": "engineers", "right": "finalise"}).status_code == 403
    assert requests.get(f"{platform.hub.platform_url}api/datasets", timeout=30).status_code == 401
    assert [d["name"] for d in api(platform, "GET", "datasets").json()] == ["site-a", "site-b"]


def test_an_admin_creates_fills_and_grants_a_dataset(platform: Platform, tmp_path: Path) -> None:
    z1 = platform.studies["z1"].study  # of an institution in no dataset
    assert z1 in {s["study_uid"] for s in api(platform, "GET", "datasets-unassigned").json()}
    assert z1 not in visible(platform, "other-site")
    created = api(platform, "POST", "datasets", json={"name": "cohort-z", "description": "SITEZ referrals"})
    assert created.status_code == 201, created.text
    rule = api(platform, "POST", "datasets/cohort-z/rules", json={"query": {"InstitutionName": "SITEZ"}})
    assert rule.status_code == 201 and rule.json()["added"] == 1, rule.text
    assert z1 not in {s["study_uid"] for s in api(platform, "GET", "datasets-unassigned").json()}
    assert z1 not in visible(platform, "other-site")  # in the dataset, nobody granted yet
    granted = api(platform, "POST", "datasets/cohort-z/grants", json={"group": "site-b-residents", "right": "read"})
    assert granted.status_code == 201, granted.text
    assert z1 in visible(platform, "other-site")  # at once: no restart, no cache to wait for
    assert z1 not in visible(platform, "engineer")
    # a study of that institution arriving later joins by the saved rule
    series = make_study("SITEZ", "admin-z2")
    for i, ds in enumerate(series):
        ds.save_as(tmp_path / f"{i}.dcm", enforce_file_format=True)
    ingest_files(platform.orthanc.client(), sorted(tmp_path.glob("*.dcm")))
    z2 = str(series[0].StudyInstanceUID)
    deadline = time.monotonic() + 20
    while z2 not in visible(platform, "other-site") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert z2 in visible(platform, "other-site")
    assert api(platform, "GET", "datasets/cohort-z").json()["studies"] == 2
    revoked = api(platform, "DELETE", "datasets/cohort-z/grants/site-b-residents/read")
    assert revoked.status_code == 200 and revoked.json() == {"revoked": True}
    assert not {z1, z2} & visible(platform, "other-site")
    details = [(r["user"], r["dataset"], r["detail"]) for r in audit_rows(platform.hub, action="dataset.admin")]
    assert ("adam", "cohort-z", "granted read to group 'site-b-residents'") in details, details
    assert ("adam", "cohort-z", "created") in details and ("platform", "cohort-z", "rule 1: 1 arriving studies added") in details


def test_bad_changes_are_refused_with_the_reason(platform: Platform) -> None:
    unknown = api(platform, "POST", "datasets/site-a/grants", json={"group": "no-such-group", "right": "read"})
    assert unknown.status_code == 400 and "no group named 'no-such-group'" in unknown.json()["error"]
    right = api(platform, "POST", "datasets/site-a/grants", json={"group": "engineers", "right": "own"})
    assert right.status_code == 400 and "read, write, review, finalise, export" in right.json()["error"]
    missing = api(platform, "POST", "datasets/site-q/studies", json={"study_uids": ["1.2.3"]})
    assert missing.status_code == 404 and "no dataset named 'site-q'" in missing.json()["error"]
    taken = api(platform, "PATCH", "datasets/site-a", json={"name": "site-b"})
    assert taken.status_code == 409
    bad_rule = api(platform, "POST", "datasets/site-a/rules", json={"query": {"Hospital": "X"}})
    assert bad_rule.status_code == 400 and "not a DICOM attribute" in bad_rule.json()["error"]
    assert api(platform, "POST", "datasets/site-a/rules", json={"query": "InstitutionName=X"}).status_code == 400
    assert {d["name"] for d in api(platform, "GET", "datasets").json()} - {"cohort-z"} == {"site-a", "site-b"}
