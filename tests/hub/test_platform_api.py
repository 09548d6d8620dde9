"""The platform API against a real JupyterHub, configurable-http-proxy and Orthanc.

QIDO-RS filtered per grant, WADO-RS streamed or refused without revealing existence, STOW-RS
refused outside the grant with nothing stored, token checks, refused paths, the audit log
(append-only, no patient attributes), metrics, and the tasks API's rules.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest
import requests
from sqlalchemy import text

from medimg_hub.db import make_engine
from medimg_hub.pipeline.store import TaskStore
from medimg_kernel.client import ACCEPT_STORED, DICOMwebHTTPClient
from medimg_kernel.multipart import boundary_from_content_type

from .hubfixture import (Platform, auth, audit_rows, instance_in, make_study, platform_hub, stow_body,  # noqa: F401
                         wait_for_audit)

UNKNOWN_STUDY = "1.2.826.0.1.3680043.8.498.999999999"


def qido(p: Platform, role: str, path: str, **params: Any) -> list[dict[str, Any]]:
    response = requests.get(f"{p.hub.platform_url}dicom-web/{path}", params=params, headers=auth(p.tokens[role]),
                            timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json())


def studies_of(items: list[dict[str, Any]]) -> set[str]:
    return {item["0020000D"]["Value"][0] for item in items}


def test_qido_returns_only_granted_studies(platform_hub: Platform) -> None:
    p, s = platform_hub, platform_hub.studies
    site_a, site_b = {s["a1"].study, s["a2"].study}, {s["b1"].study, s["b2"].study}
    for role in ("engineer", "resident", "attending", "director"):
        assert studies_of(qido(p, role, "studies")) == site_a
    assert studies_of(qido(p, "other-site", "studies")) == site_b
    assert qido(p, "admin", "studies") == []  # admins manage grants; they hold none here
    assert len(qido(p, "engineer", "series")) == 2
    assert studies_of(qido(p, "engineer", "instances")) == site_a
    assert len(qido(p, "engineer", "instances")) == 8
    # paging applies after filtering: 8 visible instances, pages of 3
    pages = [qido(p, "engineer", "instances", limit=3, offset=o) for o in (0, 3, 6)]
    assert [len(page) for page in pages] == [3, 3, 2]
    assert len({i["00080018"]["Value"][0] for page in pages for i in page}) == 8
    # naming another dataset's (or an unassigned) study gives nothing, as for an unknown one
    for study in (s["b1"].study, s["z1"].study, UNKNOWN_STUDY):
        assert qido(p, "engineer", "studies", StudyInstanceUID=study) == []
        assert qido(p, "engineer", f"studies/{study}/series") == []
        assert qido(p, "engineer", f"studies/{study}/instances") == []
    assert len(qido(p, "engineer", f"studies/{s['a1'].study}/series/{s['a1'].series}/instances")) == 4


def test_wado_streams_granted_studies_byte_for_byte(platform_hub: Platform) -> None:
    p, a1 = platform_hub, platform_hub.studies["a1"]
    direct = p.orthanc.session()
    for path in (f"studies/{a1.study}/series/{a1.series}",
                 f"studies/{a1.study}/series/{a1.series}/instances/{a1.sops[0]}"):
        theirs = direct.get(f"{p.orthanc.dicomweb_url}/{path}", headers={"Accept": ACCEPT_STORED})
        ours = requests.get(f"{p.hub.platform_url}dicom-web/{path}", headers={
            **auth(p.tokens["resident"]), "Accept": ACCEPT_STORED}, timeout=30)
        assert ours.status_code == 200
        # the same bytes, but for the multipart boundary Orthanc draws anew for every response
        ours_b, theirs_b = (boundary_from_content_type(r.headers["Content-Type"]) for r in (ours, theirs))
        assert ours.content.replace(ours_b, theirs_b) == theirs.content and len(ours.content) > 2000
        assert ours.headers["Content-Type"].replace(ours_b.decode(), "") == theirs.headers["Content-Type"].replace(
            theirs_b.decode(), "")
    meta = requests.get(f"{p.hub.platform_url}dicom-web/studies/{a1.study}/series/{a1.series}/metadata",
                        headers=auth(p.tokens["resident"]), timeout=10)
    assert meta.status_code == 200 and len(meta.json()) == 4
    session = requests.Session()
    session.headers.update(auth(p.tokens["engineer"]))
    client = DICOMwebHTTPClient(p.hub.platform_url + "dicom-web", session=session)
    got = client.retrieve_series(a1.study, a1.series)
    assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(a1.sops)


def test_wado_outside_the_grant_is_403_whether_or_not_the_study_exists(platform_hub: Platform) -> None:
    p, s = platform_hub, platform_hub.studies
    bodies = set()
    targets = [f"studies/{s['b1'].study}/series/{s['b1'].series}", f"studies/{s['b1'].study}",
               f"studies/{s['b1'].study}/series/{s['b1'].series}/metadata",
               f"studies/{s['z1'].study}/series/{s['z1'].series}",
               f"studies/{UNKNOWN_STUDY}/series/{UNKNOWN_STUDY}.1", f"studies/{UNKNOWN_STUDY}"]
    for path in targets:
        response = requests.get(f"{p.hub.platform_url}dicom-web/{path}", headers=auth(p.tokens["engineer"]), timeout=10)
        assert response.status_code == 403
        bodies.add((response.content, response.headers["Content-Type"]))
    assert len(bodies) == 1
    # a series of another study named under a granted study is not served either
    a1, b1 = s["a1"], s["b1"]
    response = requests.get(f"{p.hub.platform_url}dicom-web/studies/{a1.study}/series/{b1.series}",
                            headers=auth(p.tokens["engineer"]), timeout=10)
    assert response.status_code == 404 and b"DICM" not in response.content


def _orthanc_instances(p: Platform, study: str) -> int:
    found = p.orthanc.session().get(f"{p.orthanc.dicomweb_url}/studies/{study}/instances")
    return len(found.json()) if found.status_code == 200 and found.content else 0


def test_stow_outside_the_grant_is_refused_and_stores_nothing(platform_hub: Platform) -> None:
    p, s = platform_hub, platform_hub.studies
    url = f"{p.hub.platform_url}dicom-web/studies"
    new_b = make_study("SITEB", "stow-new-b", n_slices=2, size=8)
    cases = [("engineer", new_b, {}),                                      # new study of an institution not writable
             ("engineer", [instance_in(s["b1"], "stow-b1", "SITEA")], {}),  # existing study of site-b
             ("engineer", [instance_in(s["z1"], "stow-z1", "SITEA")], {}),  # a study in no dataset, already in the PACS
             ("resident", make_study("SITEA", "stow-res", n_slices=1, size=8), {}),  # read-only on site-a
             ("other-site", make_study("SITEB", "stow-x", n_slices=1, size=8), {"dataset": "site-a"})]
    before = {k: _orthanc_instances(p, s[k].study) for k in ("b1", "z1")}
    for role, datasets, params in cases:
        body, ctype = stow_body(datasets)
        response = requests.post(url, data=body, params=params, timeout=30,
                                 headers={**auth(p.tokens[role]), "Content-Type": ctype})
        assert response.status_code == 403, (role, response.text)
        assert response.json() == {"error": "forbidden"}
        assert _orthanc_instances(p, str(datasets[0].StudyInstanceUID)) == before.get(
            next((k for k in ("b1", "z1") if s[k].study == str(datasets[0].StudyInstanceUID)), ""), 0)
    # a writer's new study of their institution is stored and joins the dataset
    new_a = make_study("SITEA", "stow-new-a", n_slices=2, size=8)
    body, ctype = stow_body(new_a)
    response = requests.post(url, data=body, timeout=30, headers={**auth(p.tokens["engineer"]), "Content-Type": ctype})
    assert response.status_code == 200, response.text
    assert str(p.orthanc.dicomweb_url) not in response.text  # RetrieveURLs point at the gateway
    assert _orthanc_instances(p, str(new_a[0].StudyInstanceUID)) == 2
    assert len(qido(p, "resident", "studies", StudyInstanceUID=str(new_a[0].StudyInstanceUID))) == 1
    assert qido(p, "other-site", "studies", StudyInstanceUID=str(new_a[0].StudyInstanceUID)) == []


def test_tokens_missing_forged_unscoped_and_borrowed(platform_hub: Platform) -> None:
    p = platform_hub
    url = f"{p.hub.platform_url}dicom-web/studies"
    for headers in ({}, auth("forged" + "0" * 26), {"Authorization": "Basic YWRtaW46YWRtaW4="},
                    {"Authorization": f"token {p.hub.admin_token}x"}):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401 and response.json() == {"error": "authentication required"}
    unscoped = p.hub.new_token("eve", ["read:users:name!user"])
    assert requests.get(url, headers=auth(unscoped), timeout=10).status_code == 403
    # another user's token gives that user's view, never the caller's
    assert studies_of(requests.get(url, headers=auth(p.tokens["other-site"]), timeout=10).json()) == {
        p.studies["b1"].study, p.studies["b2"].study}
    # Bearer works like token
    bearer = requests.get(url, headers={"Authorization": f"Bearer {p.tokens['engineer']}"}, timeout=10)
    assert bearer.status_code == 200 and len(bearer.json()) >= 2


def _raw_get(port: int, path: str, token: str, extra: str = "") -> int:
    """A GET sent as written (no client-side normalisation of the path)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"token {token}")
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_traversal_odd_paths_and_injection_are_refused(platform_hub: Platform) -> None:
    p, a1 = platform_hub, platform_hub.studies["a1"]
    token = p.tokens["engineer"]
    root = "/services/platform/dicom-web/"
    bad = [f"{root}../../tools/find", f"{root}studies/%2e%2e/%2e%2e/tools", f"{root}studies/..%2Ftools",
           f"{root}/studies", f"{root}studies//{a1.study}", f"{root}studies/{a1.study}/../../instances",
           f"{root}studies/1.2.abc", f"{root}studies/{'1' * 70}", f"{root}studies?PatientName=x%0d%0aX-Evil:%201",
           f"{root}studies/{a1.study}/series/{a1.series}?x%0a=1"]
    missing = [f"{root}tools/find", f"{root}instances/{a1.sops[0]}", f"{root}system", f"{root}studies/{a1.study}/bulk/1",
               "/services/platform/instances", "/services/platform/tools/lookup"]
    for path in bad:
        assert _raw_get(p.hub.service_port, path, token) == 400, path
    for path in missing:
        assert _raw_get(p.hub.service_port, path, token) == 404, path
    # Orthanc's credentials never appear in answers
    secret = p.orthanc.credentials().password
    response = requests.get(f"{p.hub.platform_url}dicom-web/studies/{a1.study}/series/{a1.series}/metadata",
                            headers=auth(token), timeout=10)
    assert secret not in response.text and "Authorization" not in response.headers.get("Access-Control-Expose-Headers", "")


def test_every_request_is_audited_without_patient_attributes(platform_hub: Platform) -> None:
    p, s = platform_hub, platform_hub.studies
    allowed = requests.get(f"{p.hub.platform_url}dicom-web/studies/{s['a1'].study}/series/{s['a1'].series}/metadata",
                           headers=auth(p.tokens["resident"]), timeout=10)
    denied = requests.get(f"{p.hub.platform_url}dicom-web/studies/{s['b1'].study}", headers=auth(p.tokens["resident"]),
                          timeout=10)
    anonymous = requests.get(f"{p.hub.platform_url}dicom-web/studies", timeout=10)
    row = wait_for_audit(p.hub, allowed.headers["X-Request-Id"])
    assert (row["user"], row["action"], row["outcome"], row["status"], row["dataset"]) == (
        "rita", "wado", "allowed", 200, "site-a")
    assert row["series_instance_uid"] == s["a1"].series and row["groups"] == ["site-a-residents"]
    row = wait_for_audit(p.hub, denied.headers["X-Request-Id"])
    assert (row["outcome"], row["status"], row["study_instance_uid"], row["dataset"]) == (
        "denied", 403, s["b1"].study, None)
    row = wait_for_audit(p.hub, anonymous.headers["X-Request-Id"])
    assert (row["user"], row["outcome"], row["status"]) == (None, "denied", 401)
    everything = json.dumps(audit_rows(p.hub, limit=10000))
    assert "PHANTOM" not in everything and "PID-" not in everything and "SITE" not in everything
    assert requests.get(f"{p.hub.platform_url}api/audit", headers=auth(p.tokens["director"]),
                        timeout=10).status_code == 403


def test_audit_rows_cannot_be_changed_or_deleted(platform_hub: Platform) -> None:
    engine = make_engine(platform_hub.settings.database_url)
    try:
        for statement in ("UPDATE audit_events SET user_name = 'mallory'", "DELETE FROM audit_events"):
            with pytest.raises(Exception, match="append-only"), engine.begin() as connection:
                connection.execute(text(statement))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM audit_events WHERE user_name = 'mallory'")).scalar() == 0
            assert connection.execute(text("SELECT count(*) FROM audit_events")).scalar() > 0
    finally:
        engine.dispose()


def test_metrics_count_requests_and_bytes(platform_hub: Platform) -> None:
    p = platform_hub
    response = requests.get(f"{p.hub.platform_url}metrics", headers=auth(p.tokens["admin"]), timeout=10)
    assert response.status_code == 200
    assert 'platform_api_requests_total{outcome="allowed",route="wado:studies/{study}/series/{series}"}' in response.text
    assert 'platform_api_bytes_total{direction="out"}' in response.text
    assert "platform_api_request_seconds_bucket" in response.text
    assert requests.get(f"{p.hub.platform_url}metrics", headers=auth(p.tokens["engineer"]), timeout=10).status_code == 403
    assert requests.get(f"{p.hub.platform_url}metrics", timeout=10).status_code == 401


def _finish_auto_stage(p: Platform, task_id: str) -> str:
    """Run the echo stage by hand (no worker in these tests); returns the review job's id."""
    store = TaskStore(p.settings.database_url)
    try:
        task = store.get_task(task_id)
        echo, review = task.job("echo"), task.job("review")
        assert store.execution.claim(echo.id, "test-worker") is not None
        store.execution.succeed(echo.id, "test-worker", {"message": "hello"})
        return review.id
    finally:
        store.close()


def test_tasks_api_rules(platform_hub: Platform) -> None:
    p, s = platform_hub, platform_hub.studies
    api = f"{p.hub.platform_url}api/"

    def call(method: str, path: str, role: str, body: Any = None) -> requests.Response:
        return requests.request(method, api + path, json=body, headers=auth(p.tokens[role]), timeout=30)

    submit = {"pipeline": "example-echo", "dataset": "site-a", "parameters": {"series_instance_uid": s["a1"].series}}
    created = call("POST", "tasks", "engineer", submit)
    assert created.status_code == 201, created.text
    task_id = created.json()[0]["id"]
    assert call("POST", "tasks", "resident", submit).status_code == 403  # no write on site-a
    foreign = {**submit, "parameters": {"series_instance_uid": s["b1"].series}}
    assert call("POST", "tasks", "engineer", foreign).status_code == 403  # series of another dataset
    assert task_id in {t["id"] for t in call("GET", "tasks", "director").json()}
    assert task_id not in {t["id"] for t in call("GET", "tasks", "other-site").json()}
    hidden, unknown = call("GET", f"tasks/{task_id}", "other-site"), call("GET", f"tasks/{'0' * 8}-0000-0000-0000-{'0' * 12}", "engineer")
    assert hidden.status_code == unknown.status_code == 404 and hidden.content == unknown.content
    assert call("POST", f"tasks/{task_id}/cancel", "resident", {}).status_code == 403
    review_job = _finish_auto_stage(p, task_id)
    proposal = call("POST", f"jobs/{review_job}/decide", "resident", {"decision": "accepted", "reason": "fine"})
    assert proposal.status_code == 202 and proposal.json()["status"] == "waiting_review"
    shown = call("GET", f"tasks/{task_id}", "attending").json()
    assert shown["proposals"][0]["actor"] == "rita" and shown["jobs"][1]["status"] == "waiting_review"
    assert call("POST", f"jobs/{review_job}/decide", "engineer", {"decision": "accepted"}).status_code == 403
    assert call("POST", f"jobs/{review_job}/decide", "other-site", {"decision": "accepted"}).status_code == 404
    final = call("POST", f"jobs/{review_job}/decide", "attending", {"decision": "accepted"})
    assert final.status_code == 200 and final.json()["status"] == "accepted"
    actions = {r["action"] for r in audit_rows(p.hub, limit=500)}
    assert {"task.submit", "task.list", "task.show", "task.cancel", "task.propose", "task.decide"} <= actions


def test_a_caller_leaving_mid_stream_is_audited_and_the_gateway_keeps_serving(platform_hub: Platform) -> None:
    """WADO-RS bodies are relayed (splice) straight from Orthanc; a caller that goes away is noticed."""
    import socket

    p, a1 = platform_hub, platform_hub.studies["a1"]
    port = int(p.hub.direct_url.split(":")[2].split("/")[0])
    path = f"{p.hub.direct_url.split(str(port), 1)[1]}dicom-web/studies/{a1.study}/series/{a1.series}"
    before = len(audit_rows(p.hub, limit=10000, user="rita", action="wado"))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {p.tokens['resident']}\r\n"
                         f"Accept: {ACCEPT_STORED}\r\n\r\n".encode())
            assert sock.recv(12).startswith(b"HTTP/1.1 200")
        # closed after 12 bytes: the relay fails writing, the Orthanc connection is released
    response = requests.get(f"{p.hub.platform_url}dicom-web/{path.split('dicom-web/', 1)[1]}", timeout=30,
                            headers={**auth(p.tokens["resident"]), "Accept": ACCEPT_STORED})
    assert response.status_code == 200 and response.content.count(b"DICM") == 4
    # every abandoned request is audited too (the audit row is written just after the request ends)
    deadline = time.monotonic() + 10
    while len(audit_rows(p.hub, limit=10000, user="rita", action="wado")) < before + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(audit_rows(p.hub, limit=10000, user="rita", action="wado")) == before + 4


def test_orthancs_own_errors_become_the_right_4xx(platform_hub: Platform) -> None:
    """Orthanc answers 500 to limit=-1 and to frames of an instance without pixel data: the caller
    made the mistake (400) or asked for what does not exist (404); the gateway is not failing (502)."""
    from pydicom.uid import generate_uid

    p, a1 = platform_hub, platform_hub.studies["a1"]
    headers = auth(p.tokens["engineer"])
    for query in ({"limit": "-1"}, {"offset": "-5"}, {"limit": "ten"}):
        response = requests.get(f"{p.hub.platform_url}dicom-web/studies", params=query, headers=headers, timeout=10)
        assert response.status_code == 400, (query, response.status_code)
        assert response.json()["error"] == "bad request" and "limit and offset" in response.json()["detail"]
    # a non-image instance (a text SR) in a granted study: it has no frames
    sr = instance_in(a1, "sr-without-frames")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation", "RescaleIntercept", "RescaleSlope"):
        if keyword in sr:
            delattr(sr, keyword)
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.Modality = "SR"
    p.orthanc.client().store_instances([sr])
    frames = f"studies/{a1.study}/series/{sr.SeriesInstanceUID}/instances/{sr.SOPInstanceUID}/frames/1"
    direct = p.orthanc.session().get(f"{p.orthanc.dicomweb_url}/{frames}", timeout=10)
    assert direct.status_code >= 500  # what Orthanc itself answers
    response = requests.get(f"{p.hub.platform_url}dicom-web/{frames}", headers=headers, timeout=10)
    assert response.status_code == 404 and response.json() == {"error": "not found"}


def test_metadata_points_at_the_gateway_not_at_orthanc(platform_hub: Platform) -> None:
    """BulkDataURIs in WADO-RS metadata name the gateway (where they are served under the same grant),
    never Orthanc's internal address."""
    p, a1 = platform_hub, platform_hub.studies["a1"]
    headers = auth(p.tokens["resident"])
    response = requests.get(f"{p.hub.platform_url}dicom-web/studies/{a1.study}/series/{a1.series}/metadata",
                            headers=headers, timeout=10)
    assert response.status_code == 200
    assert p.orthanc.dicomweb_url.encode() not in response.content
    uris = [value["BulkDataURI"] for item in response.json() for value in item.values()
            if isinstance(value, dict) and "BulkDataURI" in value]
    assert uris and all(uri.startswith(f"{p.hub.platform_url}dicom-web/studies/{a1.study}/") for uri in uris), uris
    bulk = requests.get(uris[0], headers=headers, timeout=10)
    assert bulk.status_code == 200 and len(bulk.content) >= 32 * 32 * 2
    # the same URI for a caller without the grant: refused like every other resource of the study
    assert requests.get(uris[0], headers=auth(p.tokens["other-site"]), timeout=10).status_code == 403
