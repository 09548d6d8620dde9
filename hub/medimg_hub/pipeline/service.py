"""The tasks API in Python: list pipelines, submit runs for one study or a cohort, follow,
cancel and decide them. The ``medimg`` command line and (with #4) the hub's HTTP API call it.

Everything a run needs is validated before anything is queued: the pipeline exists, the
parameters have the right types, each study has exactly one matching series. A cohort is
validated whole first, so a bad study refuses the submission instead of half-queuing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medimg_kernel.dicom_json import first_value
from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import MedImgError, ParameterError
from medimg_kernel.pipeline import ParameterType, PipelineDescriptor, discover_pipelines, validate_parameters

from medimg_hub.pipeline.decisions import deliveries_hook
from medimg_hub.pipeline.models import JobRecord, TaskRecord
from medimg_hub.pipeline.queue import dispatch_ready, make_celery
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)


class UnknownPipelineError(MedImgError, LookupError):
    """No pipeline has this id; the message lists the ones there are."""


class CohortError(MedImgError, ValueError):
    """A study of a cohort cannot be run (no or several matching series); nothing was queued."""


@dataclass(frozen=True)
class RunTarget:
    """One study (and the series the pipeline runs on) of a submission."""

    study_instance_uid: str
    series_instance_uid: str | None = None


def resolve_targets(client: DICOMwebProtocol, studies: Sequence[str],
                    series_filters: Mapping[str, Any]) -> list[RunTarget]:
    """Pick, for each study, the one series matching ``series_filters`` (e.g. ``{"Modality": "CT"}``)."""
    targets = []
    for study in studies:
        series = [uid for item in client.search_for_series(study, search_filters=dict(series_filters))
                  if (uid := first_value(item, "0020000E", None))]
        if len(series) != 1:
            found = "no series" if not series else f"{len(series)} series ({', '.join(series)})"
            raise CohortError(
                f"study {study}: {found} match {dict(series_filters)}; narrow the filter "
                "(e.g. --series-filter SeriesDescription=...) or pass the series explicitly"
            )
        targets.append(RunTarget(study, series[0]))
    return targets


class TaskService:
    """Submit and manage pipeline runs (hub side: the store and the broker)."""

    def __init__(self, settings: Settings, store: TaskStore | None = None) -> None:
        self.settings = settings
        self.store = store or TaskStore(settings.database_url)
        self._app = None

    @property
    def app(self) -> Any:
        if self._app is None:
            self._app = make_celery(self.settings)
        return self._app

    def pipelines(self) -> dict[str, PipelineDescriptor]:
        """Every valid pipeline (invalid descriptors are logged and skipped)."""
        return discover_pipelines(self.settings.resolve(self.settings.pipelines.root), strict=False)

    def pipeline(self, pipeline_id: str) -> PipelineDescriptor:
        known = self.pipelines()
        if pipeline_id not in known:
            raise UnknownPipelineError(
                f"no pipeline {pipeline_id!r} under {self.settings.pipelines.root}; known: {', '.join(sorted(known)) or 'none'}"
            )
        return known[pipeline_id]

    def submit(self, pipeline_id: str, parameters: Mapping[str, Any], *, owner: str,
               targets: Sequence[RunTarget] = (), dataset: str | None = None,
               progress: Callable[[int], None] | None = None) -> list[TaskRecord]:
        """Create one run per target (or one run when no targets), then queue them.

        Raises
        ------
        UnknownPipelineError, ParameterError
            Before anything is stored.
        """
        pipeline = self.pipeline(pipeline_id)
        runs = [self._parameters(pipeline, parameters, t) for t in targets] or [dict(parameters)]
        for run in runs:  # validate every run before storing any
            validate_parameters(pipeline, run)
        tasks = []
        for run in runs:
            tasks.append(self.store.create_task(pipeline, run, owner=owner, dataset=dataset))
            if progress:
                progress(1)
        dispatch_ready(self.app, self.store)
        return tasks

    @staticmethod
    def _parameters(pipeline: PipelineDescriptor, given: Mapping[str, Any], target: RunTarget) -> dict[str, Any]:
        run = dict(given)
        for param in pipeline.parameters:
            if param.type is ParameterType.STUDY_UID:
                run[param.name] = target.study_instance_uid
            elif param.type is ParameterType.SERIES_UID and target.series_instance_uid:
                run[param.name] = target.series_instance_uid
        if not any(p.type is ParameterType.STUDY_UID for p in pipeline.parameters) and not any(
                p.type is ParameterType.SERIES_UID for p in pipeline.parameters):
            raise ParameterError("study", f"pipeline {pipeline.id} takes no study or series parameter; submit it without studies")
        return run

    def list_tasks(self, **filters: Any) -> list[TaskRecord]:
        return self.store.list_tasks(**filters)

    def task(self, task_id: str) -> TaskRecord:
        return self.store.get_task(task_id)

    def cancel(self, task_id: str, *, actor: str, reason: str | None = None) -> TaskRecord:
        """Cancel a run: queued jobs at once, running ones when their worker sees the request."""
        return self.store.cancel_task(task_id, actor, reason)

    def decide(self, job_id: str, decision: str, *, actor: str, reason: str | None = None,
               outputs: Mapping[str, Any] | None = None) -> JobRecord:
        """Complete a manual stage (accepted / corrected / rejected) in the name of ``actor``.

        The decision's deliveries (``export_to`` and ``webhook`` of the task's dataset) are queued in
        the same transaction (:func:`medimg_hub.pipeline.decisions.deliveries_hook`).
        """
        job = self.store.decide(job_id, decision, actor, reason=reason, outputs=dict(outputs or {}),
                                on_decided=deliveries_hook(self.settings))
        dispatch_ready(self.app, self.store)
        return job

    def close(self) -> None:
        self.store.close()
