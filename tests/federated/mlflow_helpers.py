"""Reading a federated run back from MLflow (shared by the federated tests)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Run


def latest_federated_run(tracking_uri: str, experiment: str = "organ-segmentation-federated") -> Run:
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                               "tags.`medimg.kind` = 'federated'", order_by=["attributes.start_time DESC"])
    assert found, f"no federated run in {tracking_uri}"
    return found[0]


def history(tracking_uri: str, run_id: str, key: str) -> dict[int, float]:
    """``{step: value}`` of a metric."""
    return {m.step: m.value for m in MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, key)}


def failures(tracking_uri: str, run_id: str) -> str:
    """The run's ``failures.txt`` ("" when every site replied every time)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    if "failures.txt" not in [a.path for a in client.list_artifacts(run_id)]:
        return ""
    with open(client.download_artifacts(run_id, "failures.txt")) as fh:
        return fh.read()
