"""MLflow behind the hub's login: a real hub (hub/jupyterhub_config.py, CHP, NativeAuthenticator,
the ``mlflow`` managed service) in front of a real tracking server, driven over HTTP.

One hub and one tracking server for the module, on free loopback ports, stopped at the end even
when tests fail. Demo logins: engineer1 (engineers), resident-a (clinician), director1, admin.
"""

from __future__ import annotations

import re
import secrets
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
    rows = AuditLog(make_engine(hub.settings.database_url)).query(action="mlflow", limit=500)
    moves = [(r.user, r.outcome.value, r.detail) for r in rows if f"model '{name}'" in (r.detail or "")]
    assert ("director1", "allowed", f"POST api/2.0/mlflow/registered-models/alias: alias '{clinical}' of model "
            f"'{name}' -> version 1 (approved)") in moves, moves
    assert sum(1 for user, outcome, _ in moves if user == "engineer1" and outcome == "denied") == 4, moves
