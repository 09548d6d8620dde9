"""Each executed job as an MLflow run: parameters, outputs, the executed notebook as an artifact.

Experiment ``pipeline/<pipeline id>``, run name ``<stage>/<task id prefix>``; tags link back to
the task and job, and to the model version the stage used, so lineage runs both ways.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Numbers a stage records under ``metrics`` become MLflow metrics; the rest are tags/params.
_MAX_PARAM_CHARS = 500


def log_job_run(
    tracking_uri: str, *, pipeline_id: str, stage_id: str, task_id: str, job_id: str,
    parameters: dict[str, Any], outputs: dict[str, Any], notebook: Path | None, status: str,
) -> str:
    """Record one job as a finished MLflow run; returns the run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    name = f"pipeline/{pipeline_id}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    tags = {"medimg.task_id": task_id, "medimg.job_id": job_id, "medimg.stage_id": stage_id,
            "mlflow.runName": f"{stage_id}/{task_id[:8]}"}
    for key in ("model_name", "model_version"):
        if key in outputs:
            tags[f"medimg.{key}"] = str(outputs[key])
    run = client.create_run(experiment_id, tags=tags)
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
