"""MLflow tracking of a federated training run, and registration of its final model.

One parent MLflow run per federated run. Per round (``step`` = round number): aggregated
metrics as ``train_<key>`` / ``eval_<key>`` (weighted by each site's ``num-examples``), each
site's own as ``<site>_train_<key>`` / ``<site>_eval_<key>``, the number of sites that
replied and failed, and the global model's weights as an artifact
(``checkpoints/round-<r>.pt``, a plain ``state_dict``). The final model is logged and
registered with :func:`medimg_kernel.training.log_segmentation_model`, so
:func:`medimg_kernel.registry.load_segmentation_model` loads it like a centrally trained one.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient

from ..model import SegmentationModelConfig, build_network
from ..training import experiment_id, log_segmentation_model, tracking

#: A DICOM UID in free text (as the hub's log redaction finds them).
UID = re.compile(r"(?<![\w.])(?:[0-2](?:\.(?:0|[1-9][0-9]*)){4,}|2\.25\.[1-9][0-9]{9,})(?![\w.])")

logger = logging.getLogger(__name__)


def metric_name(text: str) -> str:
    """``text`` with characters MLflow refuses in metric names replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text).replace("-", "_")


@dataclass
class FederatedTracker:
    """The parent MLflow run of one federated run; open with :meth:`start`, close with :meth:`end`.

    Parameters
    ----------
    tracking_uri
        MLflow tracking and registry URI (``sqlite:///…`` or the server's URL).
    experiment
        Experiment name (created when missing).
    run_name
        Name of the parent run.
    """

    tracking_uri: str
    experiment: str = "organ-segmentation-federated"
    run_name: str | None = None
    run_id: str = ""
    sites: dict[str, dict[str, float]] = field(default_factory=dict)  # site → {"samples": n, "rounds": k}
    failures: list[str] = field(default_factory=list)
    _client: MlflowClient | None = None

    def start(self, params: Mapping[str, object]) -> str:
        """Create the parent run with ``params``; returns its id."""
        with tracking(self.tracking_uri) as client:
            exp = experiment_id(client, self.experiment, self.tracking_uri)
            run = client.create_run(exp, run_name=self.run_name, tags={"medimg.kind": "federated"})
            for key, value in params.items():
                client.log_param(run.info.run_id, key, str(value)[:6000])
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.run_id = run.info.run_id
        logger.info("federated run tracked as MLflow run %s", self.run_id)
        return self.run_id

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            raise RuntimeError("FederatedTracker.start() was not called")
        return self._client

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log numeric ``metrics`` on the parent run at ``step``."""
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                self.client.log_metric(self.run_id, metric_name(key), float(value), step=step)

    def log_round(self, server_round: int, phase: str, aggregated: Mapping[str, float],
                  per_site: Mapping[str, Mapping[str, float]], failed: Mapping[str, str]) -> None:
        """Aggregated (``<phase>_<key>``) and per-site (``<site>_<phase>_<key>``) metrics of a round.

        ``failed`` maps a site (or node id) to the reason it gave no result this round.
        """
        flat = {f"{phase}_{k}": v for k, v in aggregated.items()}
        for site, metrics in per_site.items():
            flat |= {f"{site}_{phase}_{k}": v for k, v in metrics.items()}
            if phase == "train":
                entry = self.sites.setdefault(site, {"samples": 0.0, "rounds": 0.0})
                entry["samples"] = max(entry["samples"], float(metrics.get("num-examples", 0)))
                entry["rounds"] += 1
        flat[f"{phase}_sites_replied"] = len(per_site)
        flat[f"{phase}_sites_failed"] = len(failed)
        self.log_metrics(flat, server_round)
        for site, reason in failed.items():
            # the run mixes every site's dataset: a site's error text never carries its studies' UIDs
            note = f"round {server_round} {phase}: {site}: {UID.sub('<uid>', str(reason))}"
            self.failures.append(note)
            logger.warning("%s", note)
        if failed:
            self.client.log_text(self.run_id, "\n".join(self.failures) + "\n", "failures.txt")

    def checkpoint(self, server_round: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Store the global weights of ``server_round`` as ``checkpoints/round-<r>.pt``."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"round-{server_round:03d}.pt"
            torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, path)
            self.client.log_artifact(self.run_id, str(path), artifact_path="checkpoints")

    def register(self, arrays: Mapping[str, np.ndarray], config: SegmentationModelConfig, *,
                 model_name: str | None, alias: str | None, rounds: int,
                 strategy: str) -> tuple[str, int | None]:
        """Log the final model on the parent run and register it; returns ``(model_uri, version)``.

        The version gets lineage tags: ``sites``, ``federated_rounds``, ``samples_per_site``
        (JSON), ``strategy``, ``federated_run_id``; ``alias`` is moved to it when given.
        """
        network = build_network(config)
        network.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, strict=True)
        with tracking(self.tracking_uri) as client:
            with mlflow.start_run(run_id=self.run_id):
                mlflow.log_dict(json.loads(config.to_json()), "segmentation_config.json")
                info = log_segmentation_model(network, config, model_name)
            version = info.registered_model_version
            if model_name is not None and version is not None:
                tags = {"sites": ",".join(sorted(self.sites)), "federated_rounds": str(rounds),
                        "samples_per_site": json.dumps({s: int(v["samples"]) for s, v in sorted(self.sites.items())}),
                        "n_train_series": str(int(sum(v["samples"] for v in self.sites.values()))),
                        "strategy": strategy, "federated_run_id": self.run_id, "training": "federated"}
                for key, value in tags.items():
                    client.set_model_version_tag(model_name, str(version), key, value)
                if alias:
                    client.set_registered_model_alias(model_name, alias, str(version))
        logger.info("registered %s version %s (alias %s)", model_name, version, alias)
        return info.model_uri, int(version) if version is not None else None

    def end(self, status: str = "FINISHED") -> None:
        """Close the parent run (``FINISHED`` or ``FAILED``)."""
        if self._client is not None and self.run_id:
            self._client.set_terminated(self.run_id, status)


def latest_federated_run(tracking_uri: str, experiment: str = "organ-segmentation-federated") -> str:
    """The id of the newest federated run of ``experiment``."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`medimg.kind` = 'federated'",
                              order_by=["attributes.start_time DESC"], max_results=1) if found else []
    if not runs:
        raise LookupError(f"no federated run in experiment {experiment!r} of {tracking_uri}")
    return runs[0].info.run_id


def round_history(tracking_uri: str, run_id: str, prefixes: tuple[str, ...] = ("train_", "eval_")
                  ) -> dict[str, dict[int, float]]:
    """Per-round metrics of a federated run: ``{metric: {round: value}}``.

    ``prefixes`` selects aggregated metrics (``train_``, ``eval_``); pass site names
    (e.g. ``("SITEA_eval_",)``) for one site's curves.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(prefixes)]
    return {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in sorted(keys)}


__all__ = ["FederatedTracker", "metric_name", "latest_federated_run", "round_history"]
