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
import time
from pathlib import Path
from typing import Any

from medimg_hub.tracking.accounts import AdminApi, dataset_experiment

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
    the study is in no dataset (see the module's docstring).
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(api.url)
    experiment_id = dataset_experiment(api, f"pipeline/{pipeline_id}/{dataset or UNASSIGNED}",
                                       [dataset or UNASSIGNED_TAG])
    tags = {"medimg.task_id": task_id, "medimg.job_id": job_id, "medimg.stage_id": stage_id,
            "mlflow.runName": f"{stage_id}/{task_id[:8]}", "mlflow.user": owner}
    for key in ("model_name", "model_version"):
        if key in outputs:
            tags[f"medimg.{key}"] = str(outputs[key])
    run = client.create_run(experiment_id, tags=tags)  # user_id follows the mlflow.user tag
    run_id = run.info.run_id
    params = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in parameters.items() if k != "medimg_job"]
    now_ms = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now_ms, 0) for k, v in (outputs.get("metrics") or {}).items()
               if isinstance(v, (int, float))]
    extra = [RunTag(f"medimg.output.{k}", str(v)[:_MAX_PARAM_CHARS]) for k, v in outputs.items() if k != "metrics"]
    client.log_batch(run_id, metrics=metrics, params=params, tags=extra)
    if notebook is not None and notebook.exists():
        client.log_artifact(run_id, str(notebook), artifact_path="notebook")
    client.set_terminated(run_id, status="FINISHED" if status == "succeeded" else "FAILED")
    return run_id
