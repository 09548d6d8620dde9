"""A worker of one worker group: claims jobs, runs their stage notebook, records the outcome.

Run as ``medimg worker GROUP`` (one process, one job at a time, its warm kernel kept between
jobs). While a job runs, a thread heartbeats to the task store; a job whose heartbeats stop
(the worker was killed) is recovered by the dispatcher's reconciler. A cancel request seen in a
heartbeat interrupts the kernel. Transient failures (the PACS or MLflow unreachable) are
retried with the stage's backoff; others fail the job with the reason stored on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medimg_kernel.pipeline import load_pipeline
from medimg_kernel.stage import StageContext, read_outputs

from medimg_hub.errors import NotJobOwnerError
from medimg_hub.pacs.connection import pacs_connection
from medimg_hub.access.datasets import DatasetDirectory
from medimg_hub.db import make_engine
from medimg_hub.pipeline.models import JobRecord, TaskRecord
from medimg_hub.pipeline.notebook_runner import NotebookRunner, StageExecutionError
from medimg_hub.pipeline.queue import RUN_JOB, dispatch_ready, make_celery
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.pipeline.tracking import log_job_run
from medimg_hub.settings import Settings
from medimg_hub.tracking.accounts import AdminApi
from medimg_hub.tracking.server import credentials

log = logging.getLogger(__name__)

#: Exception names (as the kernel reports them) worth a retry: the world, not the input, failed.
TRANSIENT_ERRORS = frozenset({
    "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "TimeoutError", "ReadTimeout",
    "ConnectTimeout", "DICOMwebError", "BrokenPipeError", "MlflowException",
})
KERNEL_NAME = "python3"


class _Heartbeat(threading.Thread):
    """Beats for one job until stopped; interrupts the kernel when a cancel is requested."""

    def __init__(self, store: TaskStore, notebooks: NotebookRunner, job_id: str, worker_id: str,
                 interval_s: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.store, self.job_id, self.worker_id, self.interval_s = store, job_id, worker_id, interval_s
        self.notebooks = notebooks
        self.stopped = threading.Event()
        self.cancelled = False
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                job = self.store.execution.heartbeat(self.job_id, self.worker_id)
            except NotJobOwnerError:
                log.warning("job %s was taken from this worker; interrupting it", self.job_id)
                self.lost = True
                self.notebooks.interrupt(KERNEL_NAME)
                return
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the job; retry next beat
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                continue
            if job.cancel_requested and not self.cancelled:
                log.info("cancel requested for job %s; interrupting its kernel", self.job_id)
                self.cancelled = True
                self.notebooks.interrupt(KERNEL_NAME)


@dataclass
class JobRunner:
    """Everything a worker needs to run jobs (built once per worker process)."""

    settings: Settings
    store: TaskStore
    worker_id: str
    notebooks: NotebookRunner = field(init=False)
    mlflow: AdminApi = field(init=False)
    datasets: DatasetDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.notebooks = NotebookRunner(warm=self.settings.queue.warm_kernels)
        self.mlflow = AdminApi(self.settings.mlflow_tracking_uri, credentials(self.settings))
        self.datasets = DatasetDirectory(make_engine(self.settings.database_url))

    def run(self, job_id: str) -> str:
        """Run one job end to end; returns its final status for this attempt."""
        job = self.store.execution.claim(job_id, self.worker_id)
        if job is None:
            log.info("job %s is not claimable (taken, done or cancelled); dropping the message", job_id)
            return "skipped"
        task = self.store.get_task(job.task_id)
        pipeline = load_pipeline(self.settings.resolve(self.settings.pipelines.root) / task.pipeline_id)
        notebook = Path(pipeline.root) / str(pipeline.stage(job.stage_id).notebook)
        workdir = self.settings.var_dir / "jobs" / job.id / f"attempt-{job.attempts}"
        workdir.mkdir(parents=True, exist_ok=True)
        context = self._context(job, task.pipeline_id, workdir)
        executed = workdir / f"{job.stage_id}.ipynb"
        heartbeat = _Heartbeat(self.store, self.notebooks, job.id, self.worker_id, self.settings.tasks.heartbeat_s)
        heartbeat.start()
        try:
            params = {**job.parameters, "medimg_job": str(workdir / "context.json")}
            run = self.notebooks.run(notebook, executed, params, kernel_name=KERNEL_NAME, timeout_s=job.timeout_s)
        except StageExecutionError as exc:
            return self._failed(job, task, heartbeat, exc.ename, str(exc), executed)
        except Exception as exc:  # noqa: BLE001 - the kernel died or would not start: record it, keep serving
            return self._failed(job, task, heartbeat, type(exc).__name__, f"{type(exc).__name__}: {exc}", executed)
        finally:
            heartbeat.stopped.set()
            heartbeat.join()
        outputs = {**read_outputs(context.outputs_path), "executed_notebook": str(executed)}
        tracking_start = time.perf_counter()
        outputs["mlflow_run_id"] = self._track(job, task, outputs, executed, "succeeded")
        outputs["timing_s"] = {"notebook": round(run.seconds, 3), "tracking": round(time.perf_counter() - tracking_start, 3)}
        self.store.execution.succeed(job.id, self.worker_id, outputs)
        return "succeeded"

    def _context(self, job: JobRecord, pipeline_id: str, workdir: Path) -> StageContext:
        pacs = pacs_connection(self.settings)
        context = StageContext(
            job_id=job.id, task_id=job.task_id, pipeline_id=pipeline_id, stage_id=job.stage_id,
            outputs_path=str(workdir / "outputs.json"), dicomweb_url=pacs.dicomweb_url, dicomweb_auth=pacs.basic,
            dicomweb_headers=pacs.headers(), dicomweb_cert=pacs.client_cert, dicomweb_verify=pacs.verify,
            tracking_uri=self.settings.mlflow_tracking_uri,
            extra={"registered_model": self.settings.mlflow.registered_model, "model_alias": self.settings.mlflow.model_alias},
        )
        context.to_file(workdir / "context.json")
        return context

    def _failed(self, job: JobRecord, task: TaskRecord, heartbeat: _Heartbeat, ename: str, message: str,
                executed: Path) -> str:
        heartbeat.stopped.set()
        heartbeat.join()
        if heartbeat.lost:
            return "lost"
        if heartbeat.cancelled:
            self.store.execution.confirm_cancelled(job.id, self.worker_id)
            return "cancelled"
        outputs = {"executed_notebook": str(executed)} if executed.exists() else {}
        try:
            self._track(job, task, outputs, executed, "failed")
        except Exception:  # noqa: BLE001 - tracking must not hide the job's own failure
            log.warning("could not record failed job %s in MLflow", job.id, exc_info=True)
        retryable = ename in TRANSIENT_ERRORS
        self.store.execution.fail(job.id, self.worker_id, message, retryable=retryable)
        log.warning("job %s failed (%s, %s): %s", job.id, ename, "will retry" if retryable else "final", message)
        return "failed"

    def _track(self, job: JobRecord, task: TaskRecord, outputs: dict[str, Any], executed: Path, status: str) -> str:
        dataset = task.dataset
        if dataset is None and task.study_instance_uid:
            dataset = self.datasets.dataset_of(task.study_instance_uid)
        return log_job_run(
            self.mlflow, pipeline_id=task.pipeline_id, stage_id=job.stage_id, task_id=job.task_id, job_id=job.id,
            owner=task.owner, dataset=dataset, parameters=job.parameters, outputs=outputs, notebook=executed,
            status=status,
        )


def worker_id_for(group: str) -> str:
    return f"{group}@{socket.gethostname()}:{os.getpid()}"


def run_worker(settings: Settings, group: str) -> None:
    """Serve one worker group's queue until stopped (SIGTERM finishes the current job first)."""
    app = make_celery(settings)
    store = TaskStore(settings.database_url)
    runner = JobRunner(settings, store, worker_id_for(group))

    @app.task(name=RUN_JOB)
    def run_job(job_id: str) -> str:
        status = runner.run(job_id)
        dispatch_ready(app, store)  # fast path: start the next stage now, not at the next dispatcher pass
        return status

    try:
        app.worker_main([
            "worker", "--queues", group, "--pool", "solo", "--concurrency", "1",
            "--hostname", f"{group}@%h-{os.getpid()}", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "INFO",
        ])
    finally:
        runner.notebooks.shutdown()
        store.close()
