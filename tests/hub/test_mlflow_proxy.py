"""MLflow behind the hub's login: a real hub (hub/jupyterhub_config.py, CHP, NativeAuthenticator,
the ``mlflow`` managed service) in front of a real tracking server, driven over HTTP.

One hub and one tracking server for the module, on free loopback ports, stopped at the end even
when tests fail. Demo logins: engineer1 (engineers), resident-a (clinician), director1, admin.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from medimg_hub.tracking.server import MlflowServer
from medimg_hub.access.audit import AuditLog
from medimg_hub.db import make_engine

from .hubproc import Hub, HubBrowser, hub_log_tail, running_hub

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API = "api/2.0/mlflow"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("mlflow-hub")
    with running_hub(root, spawner="shared", homes_dir=root / "homes") as running:
        tracking = MlflowServer(running.settings)
        try:
            tracking.start()
            yield running
        finally:
            tracking.stop()


def mlflow_url(hub: Hub) -> str:
    return f"{hub.url}/services/mlflow"


def browser(hub: Hub, name: str) -> HubBrowser:
    session = HubBrowser(hub)
    assert session.logged_in(session.login(name, hub.passwords[name])), hub_log_tail(hub)
    return session


@pytest.fixture(scope="module")
def admin_token(hub: Hub) -> str:
    return browser(hub, "admin").new_token("admin")


def token_of(hub: Hub, admin_token: str, user: str) -> str:
    """A token of ``user`` made by the admin (clinicians and directors may not make their own)."""
    response = requests.post(f"{hub.url}/hub/api/users/{user}/tokens", headers={"Authorization": f"token {admin_token}"},
                             json={"note": "test", "expires_in": 600}, timeout=30)
    response.raise_for_status()
    return str(response.json()["token"])


def search(hub: Hub, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{mlflow_url(hub)}/{API}/experiments/search", json={"max_results": 10}, headers=headers,
                         timeout=30, allow_redirects=False)


def test_engineer_browser_gets_the_ui_and_the_rest_api(hub: Hub) -> None:
    engineer = browser(hub, "engineer1")
    page = engineer.get(f"{mlflow_url(hub)}/", timeout=60, headers={"Accept": "text/html"})
    assert page.status_code == 200, hub_log_tail(hub)
    assert page.url == f"{mlflow_url(hub)}/"  # after the hub's OAuth round trip
    assert "<title>MLflow</title>" in page.text
    script = re.search(r'src="(static-files/[^"]+\.js)"', page.text)
    assert script is not None
    bundle = engineer.get(f"{mlflow_url(hub)}/{script.group(1)}", timeout=60)
    assert bundle.status_code == 200 and len(bundle.content) > 100_000  # streamed through, not truncated
    # a page script's GET and same-origin POST with the session cookie
    listed = engineer.get(f"{mlflow_url(hub)}/ajax-api/2.0/mlflow/experiments/search?max_results=5", timeout=30)
    assert listed.status_code == 200 and "experiments" in listed.json()
    name = f"browser-{secrets.token_hex(4)}"
    created = engineer.post(f"{mlflow_url(hub)}/ajax-api/2.0/mlflow/experiments/create", json={"name": name},
                            headers={"Origin": hub.url, "Sec-Fetch-Site": "same-origin"}, timeout=30)
    assert created.status_code == 200, created.text
    # the same POST from another site's page carries the cookie but is refused
    forged = engineer.post(f"{mlflow_url(hub)}/ajax-api/2.0/mlflow/experiments/create",
                           json={"name": name + "-x"}, headers={"Origin": "http://evil.example",
                                                                "Sec-Fetch-Site": "cross-site"}, timeout=30)
    assert forged.status_code == 403


def test_engineer_token_works_with_the_mlflow_client(hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    token = browser(hub, "engineer1").new_token("engineer1")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    # like a kernel: the hub token only, never the platform's MLflow account (this process is hub side)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    payload = secrets.token_bytes(3 << 20)  # 3 MB: several chunks each way
    (tmp_path / "weights.bin").write_bytes(payload)
    client = MlflowClient(tracking_uri=mlflow_url(hub))
    experiment = client.create_experiment(f"client-{secrets.token_hex(4)}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "dice", 0.91)
    client.log_artifact(run.info.run_id, str(tmp_path / "weights.bin"), "model")
    client.set_terminated(run.info.run_id)
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.metrics == {"dice": 0.91}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/weights.bin"]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model/weights.bin",
                                                dst_path=str(tmp_path / "down"), tracking_uri=mlflow_url(hub))
    assert Path(local).read_bytes() == payload
    # the artifact is in the server's store, not on the client's disk
    assert list((hub.settings.resolve(hub.settings.mlflow.artifacts_dir)).rglob("weights.bin"))
    rows = AuditLog(make_engine(hub.settings.database_url)).query(user="engineer1", action="mlflow", limit=200)
    details = [r.detail or "" for r in rows]
    assert any(d.startswith("PUT api/2.0/mlflow-artifacts/artifacts/") for d in details), details
    assert all("?" not in d for d in details)


def test_who_may_use_mlflow(hub: Hub, admin_token: str) -> None:
    # clinicians: the hub refuses the browser sign-in, the proxy refuses their tokens
    clinician = browser(hub, "resident-a")
    page = clinician.get(f"{mlflow_url(hub)}/", timeout=60, headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert search(hub, {"Authorization": f"Bearer {token_of(hub, admin_token, 'resident-a')}"}).status_code == 403
    # directors and admins may, with either header form
    assert search(hub, {"Authorization": f"token {token_of(hub, admin_token, 'director1')}"}).status_code == 200
    assert search(hub, {"Authorization": f"Bearer {admin_token}"}).status_code == 200


def test_missing_and_forged_tokens_are_refused(hub: Hub) -> None:
    assert search(hub, {}).status_code == 403
    assert search(hub, {"Authorization": f"Bearer {secrets.token_hex(16)}"}).status_code == 403
    assert search(hub, {"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 403
    page = requests.get(f"{mlflow_url(hub)}/", headers={"Accept": "text/html"}, timeout=30, allow_redirects=False)
    assert page.status_code == 302 and "/hub/api/oauth2/authorize" in page.headers["Location"]
    # the tracking server itself answers only below the prefix, and never sees hub credentials
    direct = requests.get(f"{hub.settings.mlflow_tracking_uri}/health", timeout=10)
    assert direct.status_code == 200


def test_engineers_kernel_tracks_runs_through_the_hub(hub: Hub, admin_token: str) -> None:
    from .hubproc import run_in_kernel

    engineer = browser(hub, "engineer1")
    try:
        landing = engineer.spawn_form("engineer1", "engineer-cpu")
        assert landing.url.endswith("/user/engineer1/lab"), hub_log_tail(hub)
        out = run_in_kernel(hub, "engineer1", engineer.new_token("engineer1"), (
            "import os, mlflow\n"
            "print(os.environ['MLFLOW_TRACKING_URI'], bool(os.environ['MLFLOW_TRACKING_TOKEN']))\n"
            "mlflow.set_experiment('from-a-kernel')\n"
            "with mlflow.start_run() as run:\n"
            "    mlflow.log_metric('loss', 0.25)\n"
            "print(mlflow.get_run(run.info.run_id).data.metrics['loss'])\n"), timeout_s=120)
        assert out["error"] == "", out
        words = out["stdout"].split()  # mlflow also prints a "View run ..." line
        assert words[:2] == [mlflow_url(hub), "True"] and words[-1] == "0.25", out
    finally:
        requests.delete(f"{hub.url}/hub/api/users/engineer1/server", headers={"Authorization": f"token {admin_token}"},
                        timeout=60)


def test_mlflow_itself_refuses_callers_without_the_platform_account(hub: Hub) -> None:
    """Kernels share the loopback interface: MLflow must not answer them except through the proxy."""
    import requests as plain

    settings = hub.settings
    direct = f"http://127.0.0.1:{settings.mlflow.port}/services/mlflow/api/2.0/mlflow/experiments/search"
    refused = plain.post(direct, json={"max_results": 1}, timeout=10)
    assert refused.status_code == 401
    from medimg_hub.tracking.server import credentials

    allowed = plain.post(direct, json={"max_results": 1}, timeout=10, auth=credentials(settings))
    assert allowed.status_code == 200


def test_moving_the_clinical_alias_is_an_approval(hub: Hub, admin_token: str) -> None:
    """Engineers register models and set their own aliases; the alias clinical pipelines load
    (``champion``) moves only by a director's or an admin's request, and the move is audited."""
    engineer = {"Authorization": f"Bearer {token_of(hub, admin_token, 'engineer1')}"}
    director = {"Authorization": f"Bearer {token_of(hub, admin_token, 'director1')}"}
    base = f"{mlflow_url(hub)}/{API}"
    name = f"organ-model-{secrets.token_hex(3)}"
    assert requests.post(f"{base}/registered-models/create", json={"name": name}, headers=engineer,
                         timeout=30).status_code == 200
    experiment = requests.post(f"{base}/experiments/create", json={"name": name}, headers=engineer, timeout=30)
    run = requests.post(f"{base}/runs/create", json={"experiment_id": experiment.json()["experiment_id"]},
                        headers=engineer, timeout=30).json()["run"]["info"]
    for _ in range(2):
        version = requests.post(f"{base}/model-versions/create", headers=engineer, timeout=30, json={
            "name": name, "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]})
        assert version.status_code == 200, version.text
    clinical = hub.settings.mlflow.model_alias
    assert clinical == "champion"

    def set_alias(headers: dict[str, str], alias: str, version: str, ajax: bool = False) -> requests.Response:
        prefix = f"{mlflow_url(hub)}/ajax-api/2.0/mlflow" if ajax else base
        return requests.post(f"{prefix}/registered-models/alias", json={"name": name, "alias": alias,
                                                                          "version": version},
                             headers=headers, timeout=30)

    def alias_version(alias: str) -> str | None:
        found = requests.get(f"{base}/registered-models/get", params={"name": name}, headers=director, timeout=30)
        aliases = {a["alias"]: a["version"] for a in found.json()["registered_model"].get("aliases", [])}
        return aliases.get(alias)

    assert set_alias(engineer, "candidate", "2").status_code == 200  # any other alias: engineers may
    assert set_alias(engineer, clinical, "2").status_code == 403
    assert set_alias(engineer, clinical, "2", ajax=True).status_code == 403  # the UI's route too
    assert alias_version(clinical) is None
    assert set_alias(director, clinical, "1").status_code == 200
    assert alias_version(clinical) == "1"
    deleted = requests.delete(f"{base}/registered-models/alias", params={"name": name, "alias": clinical},
                              headers=engineer, timeout=30)
    assert deleted.status_code == 403 and alias_version(clinical) == "1"
    assert set_alias(engineer, clinical, "not-a-version").status_code == 403  # refused before MLflow sees it
    audit = AuditLog(make_engine(hub.settings.database_url))
    deadline = time.monotonic() + 10  # the proxy writes audit rows after answering, from a thread
    while True:
        rows = audit.query(action="mlflow", limit=500)
        moves = [(r.user, r.outcome.value, r.detail) for r in rows if f"model '{name}'" in (r.detail or "")]
        if len(moves) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ("director1", "allowed", f"POST api/2.0/mlflow/registered-models/alias: alias '{clinical}' of model "
            f"'{name}' -> version 1 (approved)") in moves, moves
    assert sum(1 for user, outcome, _ in moves if user == "engineer1" and outcome == "denied") == 4, moves


# --- datasets are the unit of access in MLflow too (#13 item 2) ---------------------------------------

@pytest.fixture(scope="module")
def job_runs(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """One pipeline job's run per dataset (site-a, site-c), logged hub side as a worker logs them."""
    from medimg_hub.access.datasets import seed_datasets
    from medimg_hub.db.migrations import upgrade
    from medimg_hub.pipeline.tracking import log_job_run
    from medimg_hub.tracking.accounts import AdminApi
    from medimg_hub.tracking.server import credentials

    settings = hub.settings
    upgrade(settings.database_url)
    seed_datasets(make_engine(settings.database_url), settings.datasets)
    api = AdminApi(settings.mlflow_tracking_uri, credentials(settings))
    folder = tmp_path_factory.mktemp("executed")
    runs: dict[str, dict[str, str]] = {}
    for dataset in ("site-a", "site-c"):
        study = f"1.2.826.0.1.3680043.10.999.{secrets.randbelow(10**9)}"
        notebook = folder / f"{dataset}.ipynb"
        notebook.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": [study]}],
                                        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        run_id = log_job_run(api, pipeline_id="organ-segmentation", stage_id="segment", task_id=secrets.token_hex(8),
                             job_id=secrets.token_hex(8), owner="resident-c" if dataset == "site-c" else "resident-a",
                             dataset=dataset, parameters={"study_instance_uid": study},
                             outputs={"metrics": {"liver_ml": 1500.0}, "seg_sop_instance_uid": study + ".1"},
                             notebook=notebook, status="succeeded")
        experiment = api.call("GET", f"{API}/runs/get", params={"run_id": run_id})["run"]["info"]["experiment_id"]
        runs[dataset] = {"run_id": run_id, "study": study, "experiment_id": experiment,
                         "notebook": f"notebook/{notebook.name}"}
    time.sleep(GRANTS_TTL_S)  # the proxy's cached grants from earlier tests (before the sync) expire
    return runs


#: Seconds the proxy reuses a group's dataset grants (DatasetDirectory's ttl_s), plus a margin.
GRANTS_TTL_S = 5.5


def _reads(hub: Hub, headers: dict[str, str], run: dict[str, str]) -> dict[str, int]:
    """Status of each way of reading one run through the proxy."""
    base = mlflow_url(hub)
    run_id, experiment = run["run_id"], run["experiment_id"]
    graph = requests.post(f"{base}/graphql", headers=headers, timeout=30, json={
        "query": "query q($d: MlflowGetRunInput){mlflowGetRun(input:$d){run{info{runId}}}}",
        "variables": {"d": {"runId": run_id}}})
    return {
        "runs/get": requests.get(f"{base}/{API}/runs/get", params={"run_id": run_id}, headers=headers, timeout=30).status_code,
        "artifacts/list": requests.get(f"{base}/{API}/artifacts/list", params={"run_id": run_id}, headers=headers,
                                       timeout=30).status_code,
        "get-artifact": requests.get(f"{base}/get-artifact", params={"run_uuid": run_id, "path": run["notebook"]},
                                     headers=headers, timeout=30).status_code,
        "mlflow-artifacts": requests.get(
            f"{base}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/{run['notebook']}", headers=headers,
            timeout=30).status_code,
        "metrics": requests.get(f"{base}/ajax-api/2.0/mlflow/metrics/get-history-bulk",
                                params={"run_id": run_id, "metric_key": "liver_ml"}, headers=headers,
                                timeout=30).status_code,
        "experiments/get": requests.get(f"{base}/{API}/experiments/get", params={"experiment_id": experiment},
                                        headers=headers, timeout=30).status_code,
        "graphql": 200 if (graph.json().get("data") or {}).get("mlflowGetRun") else 403,
    }


def _listed(hub: Hub, headers: dict[str, str], runs: dict[str, dict[str, str]]) -> tuple[set[str], set[str]]:
    """(experiments, runs) a search shows to the caller, among ``runs``'."""
    base = f"{mlflow_url(hub)}/{API}"
    experiments = requests.post(f"{base}/experiments/search", json={"max_results": 1000}, headers=headers, timeout=30)
    found = requests.post(f"{base}/runs/search", headers=headers, timeout=30,
                          json={"experiment_ids": [r["experiment_id"] for r in runs.values()], "max_results": 100})
    assert experiments.status_code == 200 and found.status_code == 200, (experiments.text, found.text)
    ids = {e["experiment_id"] for e in experiments.json().get("experiments", [])}
    return ({d for d, r in runs.items() if r["experiment_id"] in ids},
            {d for d, r in runs.items() if r["run_id"] in {x["info"]["run_id"] for x in found.json().get("runs", [])}})


def test_a_datasets_runs_are_read_only_by_its_grantees(hub: Hub, admin_token: str,
                                                       job_runs: dict[str, dict[str, str]]) -> None:
    """engineer1 reads site-a and site-b, not site-c: every route to site-c's job run (its UIDs,
    outputs and executed notebook) is refused or filtered, while site-a's all answer."""
    engineer = {"Authorization": f"Bearer {token_of(hub, admin_token, 'engineer1')}"}
    got = _reads(hub, engineer, job_runs["site-a"])
    assert set(got.values()) == {200}, (got, hub_log_tail(hub))
    refused = _reads(hub, engineer, job_runs["site-c"])
    assert set(refused.values()) == {403}, refused
    assert _listed(hub, engineer, job_runs) == ({"site-a"}, {"site-a"})
    # a director holds no read grant on any dataset; the hub's admin reads them all
    director = {"Authorization": f"Bearer {token_of(hub, admin_token, 'director1')}"}
    assert set(_reads(hub, director, job_runs["site-c"]).values()) == {403}
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert set(_reads(hub, admin, job_runs["site-c"]).values()) == {200}
    assert _listed(hub, admin, job_runs) == ({"site-a", "site-c"}, {"site-a", "site-c"})
    # nothing of site-c's study in what the engineer could list
    listed = requests.post(f"{mlflow_url(hub)}/{API}/runs/search", headers=engineer, timeout=30,
                           json={"experiment_ids": [r["experiment_id"] for r in job_runs.values()]})
    assert job_runs["site-c"]["study"] not in listed.text and job_runs["site-a"]["study"] in listed.text


def test_a_grant_takes_effect_in_mlflow_without_a_restart(hub: Hub, admin_token: str,
                                                         job_runs: dict[str, dict[str, str]]) -> None:
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from medimg_hub.access.models import Grant

    engineer = {"Authorization": f"Bearer {token_of(hub, admin_token, 'engineer1')}"}
    url = f"{mlflow_url(hub)}/{API}/runs/get"
    params = {"run_id": job_runs["site-c"]["run_id"]}

    def status_within(expected: int, seconds: float = 20.0) -> int:
        deadline = time.monotonic() + seconds
        while True:
            status = requests.get(url, params=params, headers=engineer, timeout=30).status_code
            if status == expected or time.monotonic() > deadline:
                return status
            time.sleep(0.5)

    assert status_within(403, 0) == 403
    engine = make_engine(hub.settings.database_url)
    with Session(engine) as session, session.begin():
        session.add(Grant(dataset="site-c", group_name="engineers", right="read"))
    try:
        assert status_within(200) == 200
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(Grant).where(Grant.dataset == "site-c", Grant.group_name == "engineers"))
    assert status_within(403) == 403


def test_runs_are_credited_to_their_people(hub: Hub, admin_token: str, job_runs: dict[str, dict[str, str]]) -> None:
    from medimg_hub.tracking.accounts import AdminApi
    from medimg_hub.tracking.server import credentials

    api = AdminApi(hub.settings.mlflow_tracking_uri, credentials(hub.settings))
    job = api.call("GET", f"{API}/runs/get", params={"run_id": job_runs["site-c"]["run_id"]})["run"]
    assert {t["key"]: t["value"] for t in job["data"]["tags"]}["mlflow.user"] == "resident-c"  # the task's owner
    engineer = {"Authorization": f"Bearer {token_of(hub, admin_token, 'engineer1')}"}
    base = f"{mlflow_url(hub)}/{API}"
    experiment = requests.post(f"{base}/experiments/create", json={"name": f"mine-{secrets.token_hex(3)}"},
                               headers=engineer, timeout=30).json()["experiment_id"]
    forged = requests.post(f"{base}/runs/create", headers=engineer, timeout=30, json={
        "experiment_id": experiment, "user_id": "director1", "tags": [{"key": "mlflow.user", "value": "director1"}]})
    assert forged.status_code == 200, forged.text
    info = forged.json()["run"]
    assert info["info"]["user_id"] == "engineer1"
    assert {t["key"]: t["value"] for t in info["data"]["tags"]}["mlflow.user"] == "engineer1"
    # the client's default experiment works for every account; another person's experiment is read-only
    assert requests.post(f"{base}/runs/create", json={"experiment_id": "0"}, headers=engineer,
                         timeout=30).status_code == 200
    director = {"Authorization": f"Bearer {token_of(hub, admin_token, 'director1')}"}
    assert requests.post(f"{base}/runs/create", json={"experiment_id": experiment}, headers=director,
                         timeout=30).status_code == 403
    retag = requests.post(f"{base}/runs/set-tag", headers=engineer, timeout=30, json={
        "run_id": info["info"]["run_id"], "key": "mlflow.user", "value": "director1"})
    assert retag.status_code == 403


def test_users_cannot_plant_or_relabel_dataset_experiments(hub: Hub, admin_token: str,
                                                          job_runs: dict[str, dict[str, str]]) -> None:
    """A pipeline's experiment made in advance by an engineer would receive another dataset's runs."""
    from medimg_hub.tracking.accounts import AdminApi, TrackingAccessError, dataset_experiment
    from medimg_hub.tracking.server import credentials

    engineer = {"Authorization": f"Bearer {token_of(hub, admin_token, 'engineer1')}"}
    base = f"{mlflow_url(hub)}/{API}"
    planted = requests.post(f"{base}/experiments/create", json={"name": "pipeline/organ-segmentation/site-b"},
                            headers=engineer, timeout=30)
    assert planted.status_code == 403
    ajax = requests.post(f"{mlflow_url(hub)}/ajax-api/2.0/mlflow/experiments/create", headers=engineer, timeout=30,
                         json={"name": f"x-{secrets.token_hex(3)}", "tags": [{"key": "medimg.dataset", "value": "site-c"}]})
    assert ajax.status_code == 403
    mine = requests.post(f"{base}/experiments/create", json={"name": f"mine-{secrets.token_hex(3)}"}, headers=engineer,
                         timeout=30).json()["experiment_id"]
    assert requests.post(f"{base}/experiments/update", json={"experiment_id": mine, "new_name": "pipeline/x/site-b"},
                         headers=engineer, timeout=30).status_code == 403
    assert requests.post(f"{base}/experiments/set-experiment-tag", headers=engineer, timeout=30, json={
        "experiment_id": mine, "key": "medimg.dataset", "value": "site-a"}).status_code == 403
    # changing the platform's own experiment: MLflow refuses (READ only)
    assert requests.post(f"{base}/experiments/set-experiment-tag", headers=engineer, timeout=30, json={
        "experiment_id": job_runs["site-a"]["experiment_id"], "key": "note", "value": "x"}).status_code == 403
    # and a hub-side writer refuses an experiment of a pipeline's name that the platform did not make
    api = AdminApi(hub.settings.mlflow_tracking_uri, credentials(hub.settings))
    api.call("POST", f"{API}/experiments/create", json={"name": "pipeline/planted/site-b"})
    with pytest.raises(TrackingAccessError, match="not made by the platform"):
        dataset_experiment(api, "pipeline/planted/site-b", ["site-b"])
