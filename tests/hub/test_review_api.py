"""The review API (worklist, claims, drafts, proposals with labels, statistics) and finalisers' STOW,
against a real JupyterHub, configurable-http-proxy, platform API and Orthanc."""

from __future__ import annotations

from typing import Any

import requests

from medimg_hub.pipeline.store import TaskStore

from .hubfixture import Platform, audit_rows, auth, instance_in, platform_hub, stow_body  # noqa: F401

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _call(p: Platform, method: str, path: str, role: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{p.hub.platform_url}api/{path}", headers=auth(p.tokens[role]), timeout=30,
                            **kwargs)


def _waiting_job(p: Platform, key: str) -> str:
    """Submit example-echo on study ``key`` and finish its auto stage by hand; the review job's id."""
    submit = {"pipeline": "example-echo", "dataset": "site-a",
              "parameters": {"series_instance_uid": p.studies[key].series}}
    created = _call(p, "POST", "tasks", "engineer", json=submit)
    assert created.status_code == 201, created.text
    store = TaskStore(p.settings.database_url)
    try:
        task = store.get_task(created.json()[0]["id"])
        echo = task.job("echo")
        assert store.execution.claim(echo.id, "test-worker") is not None
        store.execution.succeed(echo.id, "test-worker", {"message": "hi", "model_name": "echo", "model_version": 3})
        return task.job("review").id
    finally:
        store.close()


def test_worklist_claims_drafts_proposal_and_finalise(platform_hub: Platform) -> None:
    p = platform_hub
    job = _waiting_job(p, "a2")
    worklist = _call(p, "GET", "review/worklist", "resident").json()
    item = next(i for i in worklist if i["job_id"] == job)
    assert item["dataset"] == "site-a" and item["model_version"] == 3 and item["can_finalise"] is False
    assert item["series_instance_uid"] == p.studies["a2"].series and item["claim"] is None
    assert next(i for i in _call(p, "GET", "review/worklist", "attending").json() if i["job_id"] == job)["can_finalise"]
    # no review right: nothing listed, and the job is "not found" like an unknown one
    for role in ("engineer", "other-site", "director"):
        assert job not in {i["job_id"] for i in _call(p, "GET", "review/worklist", role).json()}
        hidden = _call(p, "POST", f"review/jobs/{job}/claim", role, json={})
        assert hidden.status_code == 404 and hidden.json() == {"error": "not found"}

    # claims: the second reviewer is told who holds it, and may take it over knowingly
    assert _call(p, "POST", f"review/jobs/{job}/claim", "resident", json={}).json()["actor"] == "rita"
    taken = _call(p, "POST", f"review/jobs/{job}/claim", "attending", json={})
    assert taken.status_code == 409 and taken.json()["claim"]["actor"] == "rita"
    assert _call(p, "POST", f"review/jobs/{job}/claim", "attending", json={"force": True}).json()["actor"] == "alan"
    assert _call(p, "POST", f"review/jobs/{job}/claim", "resident", json={}).status_code == 409
    assert _call(p, "DELETE", f"review/jobs/{job}/claim", "attending").status_code == 204
    assert _call(p, "POST", f"review/jobs/{job}/claim", "resident", json={}).status_code == 200

    # drafts are per reviewer and survive a "reload" (a new request)
    assert _call(p, "GET", f"review/jobs/{job}/draft", "resident").status_code == 404
    payload = bytes(range(256)) * 40
    saved = _call(p, "PUT", f"review/jobs/{job}/draft", "resident", data=payload)
    assert saved.status_code == 200, saved.text
    assert _call(p, "GET", f"review/jobs/{job}/draft", "resident").content == payload
    assert _call(p, "GET", f"review/jobs/{job}/draft", "attending").status_code == 404  # not theirs
    assert _call(p, "PUT", f"review/jobs/{job}/draft", "resident", data=b"").status_code == 400

    # the resident proposes: the job keeps waiting, the proposal carries the draft's labels
    proposed = _call(p, "POST", f"jobs/{job}/decide", "resident", json={"decision": "corrected", "reason": "edge"})
    assert proposed.status_code == 202 and proposed.json()["with_labels"] is True
    item = _call(p, "GET", f"review/jobs/{job}", "attending").json()
    assert item["status"] == "waiting_review" and item["claim"] is None
    proposal = item["proposals"][0]
    assert proposal["actor"] == "rita" and proposal["has_mask"] is True
    labels = _call(p, "GET", f"review/jobs/{job}/proposals/{proposal['id']}/labels", "attending")
    assert labels.content == payload
    assert _call(p, "GET", f"review/jobs/{job}/proposals/{proposal['id']}/labels", "other-site").status_code == 404
    assert _call(p, "GET", f"review/jobs/{job}/draft", "resident").status_code == 404  # moved into the proposal

    # the attending finalises; the resident's late draft is refused, the job leaves the worklist
    _call(p, "PUT", f"review/jobs/{job}/draft", "attending", data=b"attending draft")
    final = _call(p, "POST", f"jobs/{job}/decide", "attending",
                  json={"decision": "corrected", "outputs": {"dice_mean": 0.9, "review_time_s": 42.0}})
    assert final.status_code == 200 and final.json()["status"] == "corrected"
    late = _call(p, "PUT", f"review/jobs/{job}/draft", "resident", data=b"late")
    assert late.status_code == 409 and "no longer waiting" in late.json()["error"]
    assert _call(p, "GET", f"review/jobs/{job}/draft", "attending").status_code == 404  # settled
    assert job not in {i["job_id"] for i in _call(p, "GET", "review/worklist", "attending").json()}
    again = _call(p, "POST", f"jobs/{job}/decide", "attending", json={"decision": "accepted"})
    assert again.status_code == 409

    # statistics: directors see every dataset, without UIDs; other sites see none of site-a
    stats = _call(p, "GET", "review/statistics", "director").json()
    row = next(r for r in stats if r["review_time_s"] == 42.0)
    assert row["dataset"] == "site-a" and row["decision"] == "corrected" and row["model_version"] == 3
    assert not any(isinstance(v, str) and v.startswith("1.2.826.") for r in stats for v in r.values())
    assert all(r["dataset"] != "site-a" for r in _call(p, "GET", "review/statistics", "other-site").json())
    actions = {r["action"] for r in audit_rows(p.hub, limit=1000)}
    assert {"review.worklist", "review.claim", "review.takeover", "review.release", "review.draft.save",
            "review.draft.get", "review.proposal.labels", "review.statistics", "task.propose",
            "task.decide"} <= actions


def test_finalisers_store_review_results_only(platform_hub: Platform) -> None:
    p, a1 = platform_hub, platform_hub.studies["a1"]
    url = f"{p.hub.platform_url}dicom-web/studies"

    def stow(role: str, ds: Any) -> int:
        body, ctype = stow_body([ds])
        return requests.post(url, data=body, timeout=30,
                             headers={**auth(p.tokens[role]), "Content-Type": ctype}).status_code

    seg_like = instance_in(a1, "review-seg")
    seg_like.SOPClassUID = SEG_CLASS
    seg_like.file_meta.MediaStorageSOPClassUID = SEG_CLASS
    assert stow("resident", seg_like) == 403  # review without finalise
    assert stow("attending", instance_in(a1, "review-ct")) == 403  # an image, not a review result
    assert stow("attending", seg_like) == 200
    other = instance_in(p.studies["b1"], "review-seg-b", "SITEB")
    other.SOPClassUID = SEG_CLASS
    assert stow("attending", other) == 403  # another dataset
