"""Attack matrix: every role × endpoint × own/other dataset × token (valid, missing, forged, another user's).

The expected answer is computed from the grants (tests/hub/hubfixture.py ``DATASETS``) for the
*owner of the token*; the test asserts there are zero leaks: QIDO results only from studies the
token's owner may read, WADO/STOW/tasks refused exactly when the grants say so, and one error
body per status across the whole matrix (a refusal never tells "exists" from "does not").
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import requests

from medimg_hub.pipeline.store import TaskStore
from medimg_kernel.client import ACCEPT_STORED
from medimg_kernel.pipeline import load_pipeline

from .hubfixture import DATASETS, REPO, ROLES, Platform, auth, instance_in, platform_hub, stow_body  # noqa: F401

TOKENS = ("valid", "missing", "forged", "another-user")
TARGETS = {"own": ("a1", "site-a"), "other": ("b1", "site-b")}


def granted(role: str, right: str, dataset: str) -> bool:
    if right == "admin":  # hub admins only, whatever the dataset
        return ROLES[role][2]
    groups = set(ROLES[role][1])
    return any(d.name == dataset and groups & set(getattr(d, right)) for d in DATASETS)


def readable_studies(p: Platform, role: str) -> set[str]:
    return {s.study for s in p.studies.values() if s.dataset and granted(role, "read", s.dataset)}


@pytest.fixture(scope="module")
def matrix_tasks(platform_hub: Platform) -> dict[str, dict[str, tuple[str, str]]]:
    """Per role, a task per dataset with its manual job waiting for review: role → dataset → (task id,
    review job id). Each role works on its own jobs, so every allowed call has one right answer (a job
    another role decided earlier would make a refusal look like a legitimate conflict)."""
    p = platform_hub
    pipeline = load_pipeline(REPO / "notebooks" / "pipelines" / "example-echo" / "pipeline.yaml")
    store = TaskStore(p.settings.database_url)
    found: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    try:
        for role in ROLES:
            for key, dataset in TARGETS.values():
                task = store.create_task(pipeline, {"series_instance_uid": p.studies[key].series}, owner="tess",
                                         dataset=dataset)
                echo = task.job("echo")
                store.execution.claim(echo.id, "matrix-worker")
                store.execution.succeed(echo.id, "matrix-worker")
                found[role][dataset] = (task.id, task.job("review").id)
    finally:
        store.close()
    return dict(found)


Endpoint = Callable[[Platform, str, str, dict[str, str], dict[str, tuple[str, str]]], requests.Response]


def _get(p: Platform, path: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.get(f"{p.hub.platform_url}{path}", headers=headers, timeout=30, **kwargs)


def _stow(p: Platform, key: str, dataset: str, headers: dict[str, str], tasks: Any) -> requests.Response:
    body, ctype = stow_body([instance_in(p.studies[key], f"matrix-{key}-{len(body_counter)}")])
    body_counter.append(1)
    return requests.post(f"{p.hub.platform_url}dicom-web/studies", data=body, timeout=30,
                         headers={**headers, "Content-Type": ctype})


body_counter: list[int] = []

ENDPOINTS: dict[str, tuple[str, Endpoint]] = {
    # name: (right needed, call)
    "qido-studies": ("read", lambda p, k, d, h, t: _get(p, "dicom-web/studies", h,
                                                        params={"StudyInstanceUID": p.studies[k].study})),
    "qido-series": ("read", lambda p, k, d, h, t: _get(p, f"dicom-web/studies/{p.studies[k].study}/series", h)),
    "qido-instances": ("read", lambda p, k, d, h, t: _get(p, "dicom-web/instances", h,
                                                          params={"StudyInstanceUID": p.studies[k].study})),
    "wado-series": ("read", lambda p, k, d, h, t: _get(
        p, f"dicom-web/studies/{p.studies[k].study}/series/{p.studies[k].series}", {**h, "Accept": ACCEPT_STORED})),
    "wado-instance": ("read", lambda p, k, d, h, t: _get(
        p, f"dicom-web/studies/{p.studies[k].study}/series/{p.studies[k].series}/instances/{p.studies[k].sops[0]}",
        {**h, "Accept": ACCEPT_STORED})),
    "wado-metadata": ("read", lambda p, k, d, h, t: _get(
        p, f"dicom-web/studies/{p.studies[k].study}/series/{p.studies[k].series}/metadata", h)),
    "stow": ("write", _stow),
    "tasks-list": ("read", lambda p, k, d, h, t: _get(p, "api/tasks", h)),
    "tasks-show": ("read", lambda p, k, d, h, t: _get(p, f"api/tasks/{t[d][0]}", h)),
    "tasks-submit": ("write", lambda p, k, d, h, t: requests.post(f"{p.hub.platform_url}api/tasks", headers=h, timeout=30,
                     json={"pipeline": "example-echo", "dataset": d,
                           "parameters": {"series_instance_uid": p.studies[k].series}})),
    "review-worklist": ("review", lambda p, k, d, h, t: _get(p, "api/review/worklist", h)),
    "review-show": ("review", lambda p, k, d, h, t: _get(p, f"api/review/jobs/{t[d][1]}", h)),
    "review-claim": ("review", lambda p, k, d, h, t: requests.post(
        f"{p.hub.platform_url}api/review/jobs/{t[d][1]}/claim", headers=h, timeout=30, json={"force": True})),
    "review-draft-put": ("review", lambda p, k, d, h, t: requests.put(
        f"{p.hub.platform_url}api/review/jobs/{t[d][1]}/draft", headers=h, timeout=30, data=b"draft")),
    "review-draft-get": ("review", lambda p, k, d, h, t: _get(p, f"api/review/jobs/{t[d][1]}/draft", h)),
    "review-statistics": ("read", lambda p, k, d, h, t: _get(p, "api/review/statistics", h)),
    "tasks-decide": ("review", lambda p, k, d, h, t: requests.post(
        f"{p.hub.platform_url}api/jobs/{t[d][1]}/decide", headers=h, timeout=30, json={"decision": "accepted"})),
    "deliveries-list": ("admin", lambda p, k, d, h, t: _get(p, "api/deliveries", h, params={"dataset": d})),
}
#: Endpoints that answer lists, filtered by grants, rather than refusing.
LISTS = ("tasks-list", "review-worklist", "review-statistics")


def _listed_datasets(name: str, response: requests.Response) -> set[str]:
    if name == "tasks-list":
        return {t["dataset"] for t in response.json() if t["owner"] == "tess"}
    return {str(row["dataset"]) for row in response.json()}


def _may_list(name: str, owner: str, dataset: str) -> bool:
    if name == "review-statistics":  # directors and admins see every dataset's statistics
        return bool({"directors", "admins"} & set(ROLES[owner][1])) or any(
            granted(owner, r, dataset) for r in ("read", "review", "finalise"))
    return granted(owner, "review" if name == "review-worklist" else "read", dataset)


def _check_allowed(name: str, response: requests.Response, key: str, p: Platform, owner: str, dataset: str) -> None:
    if name.startswith("qido"):
        assert response.status_code == 200 and {i["0020000D"]["Value"][0] for i in response.json()} == {p.studies[key].study}
    elif name in LISTS:
        assert response.status_code == 200
        visible = _listed_datasets(name, response)
        assert name == "review-statistics" or dataset in visible or name == "review-worklist"
        assert all(_may_list(name, owner, d) for d in visible), (name, owner, visible)
    elif name == "tasks-decide":  # a finaliser decides; a reviewer proposes (the job keeps waiting)
        expected = 200 if granted(owner, "finalise", dataset) else 202
        assert response.status_code == expected, (name, owner, response.status_code, response.text)
    elif name in ("review-claim", "review-draft-put", "review-draft-get"):  # the draft the owner just put
        assert response.status_code == 200, (name, owner, response.status_code, response.text)
    else:
        assert response.status_code in (200, 201), (name, response.status_code, response.text)
        if name.startswith("wado") and "metadata" not in name:
            assert response.content.count(b"DICM") >= 1


def _check_refused(name: str, response: requests.Response, p: Platform, owner: str, dataset: str) -> None:
    if name.startswith("qido"):
        assert response.status_code == 200 and response.json() == []
    elif name in LISTS:
        assert response.status_code == 200
        assert all(_may_list(name, owner, d) for d in _listed_datasets(name, response))
    elif name in ("tasks-show",) or name.startswith("review-") or (
            name == "tasks-decide" and not granted(owner, "read", dataset)):
        assert response.status_code == 404, (name, response.status_code, response.text)
    else:
        assert response.status_code == 403, (name, response.status_code, response.text)
    assert b"DICM" not in response.content and p.studies["b1"].series.encode() not in response.content or \
        granted(owner, "read", "site-b")


def test_attack_matrix(platform_hub: Platform, matrix_tasks: dict[str, dict[str, tuple[str, str]]]) -> None:
    p = platform_hub
    bodies: dict[int, set[bytes]] = defaultdict(set)
    checked = 0
    for role, (name, (right, call)), (target, (key, dataset)), token in itertools.product(
            ROLES, ENDPOINTS.items(), TARGETS.items(), TOKENS):
        owner = {"valid": role, "another-user": "other-site" if role != "other-site" else "engineer"}.get(token)
        headers = {"valid": auth(p.tokens[role]), "missing": {}, "forged": auth("f" * 32),
                   "another-user": auth(p.tokens[owner or "engineer"])}[token]
        response = call(p, key, dataset, headers, matrix_tasks[role])
        where = (role, name, target, token, response.status_code)
        if owner is None:
            assert response.status_code == 401, where
        elif name == "tasks-show" and granted(owner, "read", dataset):
            assert response.status_code == 200, where
        elif granted(owner, right, dataset) or (name == "tasks-decide" and granted(owner, "finalise", dataset)):
            _check_allowed(name, response, key, p, owner, dataset)
        else:
            _check_refused(name, response, p, owner, dataset)
        if response.status_code in (401, 403, 404):
            bodies[response.status_code].add(response.content)
        checked += 1
    assert checked == len(ROLES) * len(ENDPOINTS) * len(TARGETS) * len(TOKENS)
    assert all(len(found) == 1 for found in bodies.values()), dict(bodies)
    assert {401, 403, 404} <= set(bodies)
