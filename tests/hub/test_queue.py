"""Pipelines on the real queue: Redis, the dispatcher, a Celery worker process with a warm
papermill kernel, MLflow; on SQLite and on PostgreSQL. Faults: failing stages, transient
failures with retries, a worker killed with SIGKILL mid-job, cancellation of a running job."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from medimg_hub.tracking.server import credentials as mlflow_credentials
from medimg_hub.servers.process import free_port
from medimg_hub.stack import platform_services
from medimg_hub.settings import (
    MlflowSettings, PacsSettings, PipelinesSettings, PlatformSettings, QueueSettings, Settings, TasksSettings,
)
from medimg_hub.db.migrations import upgrade
from medimg_hub.pipeline.service import TaskService, UnknownPipelineError
from medimg_kernel.errors import ParameterError
from tests.hub.postgres import PostgresServer, postgres_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"


def _settings(var_dir: Path, database_url: str) -> Settings:
    return Settings(
        platform=PlatformSettings(var_dir=var_dir),
        pacs=PacsSettings(http_port=free_port()),
        mlflow=MlflowSettings(port=free_port(), backend_store_uri=f"sqlite:///{var_dir}/mlflow.db",
                              artifacts_dir=var_dir / "artifacts"),
        queue=QueueSettings(redis_port=free_port(), worker_groups=("default",), dispatch_interval_s=0.5,
                            redispatch_after_s=10.0),
        tasks=TasksSettings(database_url=database_url, heartbeat_s=1.0, stale_after_s=4.0),
        pipelines=PipelinesSettings(root=FIXTURES),
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def platform(request, tmp_path_factory):
    """Every platform service as a real process; the store on SQLite or PostgreSQL."""
    var_dir = tmp_path_factory.mktemp(f"queue-{request.param}")
    postgres = None
    if request.param == "postgresql":
        if reason := postgres_available():
            pytest.skip(reason)
        postgres = PostgresServer()
        postgres.start()
        url = postgres.create_database()
    else:
        url = f"sqlite:///{var_dir}/platform.db"
    settings = _settings(var_dir, url)
    upgrade(url)
    services = platform_services(settings, hub=False)  # no logins needed; the hub is tested elsewhere
    try:
        for service in services:
            service.start()
        service = TaskService(settings)
        yield settings, service
        service.close()
    finally:
        for service in reversed(services):
            service.stop()
        if postgres is not None:
            postgres.stop()


def _wait(service: TaskService, task_id: str, predicate, timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = service.task(task_id)
        if predicate(task):
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not get there in {timeout_s} s: {service.task(task_id)}")


def _submit(service: TaskService, log_dir: Path, **params):
    log_dir.mkdir(exist_ok=True)
    [task] = service.submit("test-sleep", {"log_dir": str(log_dir), **params}, owner="engineer1")
    return task


def _job(task, stage="work"):
    return next(j for j in task.jobs if j.stage_id == stage)


def test_run_reaches_review_and_a_decision_finishes_it(platform, tmp_path):
    settings, service = platform
    task = _submit(service, tmp_path / "logs")
    task = _wait(service, task.id, lambda t: _job(t, "review").status.value == "waiting_review")
    work = _job(task)
    assert work.status.value == "succeeded" and work.attempts == 1
    assert work.outputs["metrics"] == {"answer": 42.0}
    assert work.outputs["seg_sop_instance_uids"] == ["1.2.3.4"]
    assert Path(work.outputs["executed_notebook"]).exists()

    run = requests.get(f"{settings.mlflow_tracking_uri}/api/2.0/mlflow/runs/get",
                       params={"run_id": work.outputs["mlflow_run_id"]}, timeout=10,
                       auth=mlflow_credentials(settings)).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["medimg.job_id"] == work.id and tags["medimg.task_id"] == task.id
    assert run["info"]["user_id"] == "engineer1" and tags["mlflow.user"] == "engineer1"  # the task's owner
    assert run["info"]["status"] == "FINISHED" and run["info"]["end_time"] >= run["info"]["start_time"]
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"answer": 42.0}
    artifacts = requests.get(f"{settings.mlflow_tracking_uri}/api/2.0/mlflow/artifacts/list",
                             params={"run_id": run["info"]["run_id"], "path": "notebook"}, timeout=10,
                             auth=mlflow_credentials(settings)).json()
    assert [f["path"] for f in artifacts["files"]] == ["notebook/work.ipynb"]

    with pytest.raises(Exception, match="waiting_review|not a manual|cannot"):
        service.decide(work.id, "accepted", actor="resident1")  # an auto stage is never decided
    service.decide(_job(task, "review").id, "accepted", actor="attending1")
    done = service.task(task.id)
    assert done.status.value == "succeeded"
    decided = [h for h in service.store.history(task_id=task.id) if h.to_status == "accepted"]
    assert [h.actor for h in decided] == ["attending1"]


def test_bad_submissions_are_refused_before_anything_is_queued(platform, tmp_path):
    _, service = platform
    before = len(service.list_tasks(limit=1000))
    with pytest.raises(UnknownPipelineError, match="no pipeline 'nope'.*test-sleep"):
        service.submit("nope", {}, owner="engineer1")
    with pytest.raises(ParameterError, match="seconds"):
        service.submit("test-sleep", {"log_dir": str(tmp_path), "seconds": "soon"}, owner="engineer1")
    with pytest.raises(ParameterError, match="log_dir"):
        service.submit("test-sleep", {}, owner="engineer1")
    with pytest.raises(ParameterError, match="fail_with"):
        service.submit("test-sleep", {"log_dir": str(tmp_path), "fail_with": "KeyError"}, owner="engineer1")
    assert len(service.list_tasks(limit=1000)) == before


def test_a_failing_stage_fails_with_its_reason_and_others_keep_running(platform, tmp_path):
    _, service = platform
    bad = _submit(service, tmp_path / "logs", fail_with="ValueError")
    good = _submit(service, tmp_path / "logs")
    bad = _wait(service, bad.id, lambda t: t.status.value == "failed")
    assert "ValueError" in _job(bad).error and "bad input for this study" in _job(bad).error
    assert _job(bad).attempts == 1  # not transient: no retry
    assert _job(bad, "review").status.value == "cancelled"
    _wait(service, good.id, lambda t: _job(t).status.value == "succeeded")


def test_transient_failure_is_retried_with_backoff(platform, tmp_path):
    _, service = platform
    task = _submit(service, tmp_path / "logs", fail_with="ConnectionError")
    task = _wait(service, task.id, lambda t: _job(t).status.value == "succeeded")
    assert _job(task).attempts == 2
    statuses = [h.to_status for h in service.store.history(job_id=_job(task).id)]
    assert statuses.count("running") == 2 and "succeeded" == statuses[-1]


def _worker(settings):
    return next(s for s in platform_services(settings, hub=False) if s.name == "worker-default")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def test_worker_killed_mid_job_is_recovered_and_the_job_never_runs_twice_at_once(platform, tmp_path):
    settings, service = platform
    logs = tmp_path / "logs"
    task = _submit(service, logs, seconds=6.0)
    task = _wait(service, task.id, lambda t: _job(t).status.value == "running")
    worker = _worker(settings)
    pid = worker.process.pid()
    log = logs / f"{_job(task).id}.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "start" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until the notebook is sleeping inside the kernel
    kernels = _children(pid)
    os.kill(pid, signal.SIGKILL)
    time.sleep(settings.tasks.stale_after_s + 1)
    assert _job(service.task(task.id)).status.value in ("queued", "running")  # recovered, not stuck
    worker.start()  # the operator (or systemd) restarts the worker
    task = _wait(service, task.id, lambda t: _job(t).status.value == "succeeded")
    assert _job(task).attempts == 2
    lines = (logs / f"{_job(task).id}.log").read_text().split()
    assert lines[::2] == ["start", "start", "end"]  # the killed run never finished; one run at a time
    for kernel in kernels:  # the killed worker's kernel did not outlive it
        deadline = time.monotonic() + 10
        while Path(f"/proc/{kernel}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{kernel}").exists() or "Z" in Path(f"/proc/{kernel}/stat").read_text().split()[2]


def test_cancel_stops_a_running_job(platform, tmp_path):
    _, service = platform
    task = _submit(service, tmp_path / "logs", seconds=60.0)
    _wait(service, task.id, lambda t: _job(t).status.value == "running")
    start = time.monotonic()
    service.cancel(task.id, actor="engineer1", reason="wrong series")
    task = _wait(service, task.id, lambda t: _job(t).status.value == "cancelled", timeout_s=20)
    assert time.monotonic() - start < 15
    assert task.status.value == "cancelled"
