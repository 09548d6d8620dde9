"""Each executed job as an MLflow run: parameters, outputs, the executed notebook as an artifact.

Experiment ``pipeline/<pipeline id>/<dataset>``, one per dataset and confined to its grantees
(:func:`medimg_hub.tracking.accounts.dataset_experiment`): a job's run holds the study's UIDs, its
outputs and its executed notebook. A task without a dataset logs into the study's dataset, or, for
a study in none, into ``pipeline/<pipeline id>/unassigned``, which only hub admins read. Run name
``<stage>/<task id prefix>``, credited to the task's owner (``mlflow.user``); tags link back to the
task and job, and to the model version the stage used, so lineage runs both ways.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from medimg_hub.tracking.accounts import REST_API, AdminApi, TrackingAccessError, dataset_experiment

log = logging.getLogger(__name__)

#: The experiment suffix and dataset tag of jobs whose study is in no dataset (no grantee reads it).
UNASSIGNED = "unassigned"
#: Tag value of that experiment: matches no dataset name (names are settings' table keys).
UNASSIGNED_TAG = "(unassigned)"

#: Numbers a stage records under ``metrics`` become MLflow metrics; the rest are tags/params.
_MAX_PARAM_CHARS = 500


def log_job_run(
    api: AdminApi, *, pipeline_id: str, stage_id: str, task_id: str, job_id: str, owner: str, dataset: str | None,
    parameters: dict[str, Any], outputs: dict[str, Any], notebook: Path | None, status: str,
) -> str:
    """Record one job as a finished MLflow run in its dataset's experiment; returns the run id.

    ``api`` is MLflow as the platform account (its URL is the tracking URI); ``dataset`` ``None``:
    the study is in no dataset (see the module's docstring). Four requests per job, on the job's
    critical path: create the run (with its tags), log params/metrics/output tags in one batch,
    upload the executed notebook, finish the run. The experiment's id is reused from earlier jobs
    (:class:`_ExperimentIds`); MlflowClient would add a lookup of the experiment and one of the run
    before the upload.
    """
    name = f"pipeline/{pipeline_id}/{dataset or UNASSIGNED}"
    datasets = frozenset([dataset or UNASSIGNED_TAG])
    tags = {"medimg.task_id": task_id, "medimg.job_id": job_id, "medimg.stage_id": stage_id,
            "mlflow.runName": f"{stage_id}/{task_id[:8]}", "mlflow.user": owner}
    for key in ("model_name", "model_version"):
        if key in outputs:
            tags[f"medimg.{key}"] = str(outputs[key])
    start_ms = int(time.time() * 1000)
    request = {"start_time": start_ms, "run_name": tags["mlflow.runName"], "user_id": owner,
               "tags": [{"key": k, "value": v} for k, v in tags.items()]}
    try:  # user_id follows the mlflow.user tag
        run = api.call("POST", f"{REST_API}/runs/create", json={**request, "experiment_id": _experiments.id(api, name, datasets)})
    except TrackingAccessError:  # the cached experiment was deleted or renamed meanwhile: look it up again
        _experiments.forget(api, name)
        run = api.call("POST", f"{REST_API}/runs/create", json={**request, "experiment_id": _experiments.id(api, name, datasets)})
    run_id, artifact_uri = run["run"]["info"]["run_id"], run["run"]["info"]["artifact_uri"]
    params = [{"key": k, "value": str(v)[:_MAX_PARAM_CHARS]} for k, v in parameters.items() if k != "medimg_job"]
    metrics = [{"key": k, "value": float(v), "timestamp": start_ms, "step": 0}
               for k, v in (outputs.get("metrics") or {}).items() if isinstance(v, (int, float))]
    extra = [{"key": f"medimg.output.{k}", "value": str(v)[:_MAX_PARAM_CHARS]} for k, v in outputs.items() if k != "metrics"]
    api.call("POST", f"{REST_API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics, "params": params, "tags": extra})
    if notebook is not None and notebook.exists():
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(artifact_uri, tracking_uri=api.url).log_artifact(str(notebook), "notebook")
    api.call("POST", f"{REST_API}/runs/update", json={"run_id": run_id, "end_time": int(time.time() * 1000),
                                                    "status": "FINISHED" if status == "succeeded" else "FAILED"})
    return run_id


class _ExperimentIds:
    """Dataset experiments' ids by (server, name), kept for :data:`EXPERIMENT_ID_TTL_S`: a worker logs
    every job of a dataset into the same experiment. Created and checked by
    :func:`~medimg_hub.tracking.accounts.dataset_experiment` on a miss."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], tuple[str, frozenset[str], float]] = {}
        self._lock = threading.Lock()

    def id(self, api: AdminApi, name: str, datasets: frozenset[str]) -> str:
        key = (api.url, name)
        with self._lock:
            found = self._ids.get(key)
        if found is not None and found[1] == datasets and time.monotonic() < found[2]:
            return found[0]
        experiment_id = dataset_experiment(api, name, datasets)
        with self._lock:
            self._ids[key] = (experiment_id, datasets, time.monotonic() + EXPERIMENT_ID_TTL_S)
        return experiment_id

    def forget(self, api: AdminApi, name: str) -> None:
        with self._lock:
            self._ids.pop((api.url, name), None)


#: Seconds a worker reuses a dataset experiment's id before looking it up again.
EXPERIMENT_ID_TTL_S = 300.0
_experiments = _ExperimentIds()
