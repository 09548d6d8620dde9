"""The demo's pipeline runs, so a newcomer finds a model, a pipeline that has run and cases to review.

``medimg up`` (with the demo) calls, in order: :func:`ensure_demo_model` (trains and registers
the organ-segmentation model on the demo sites' ground truth if none is registered; a few
minutes on 2 CPU cores), :func:`submit_demo_runs` (the ``organ-segmentation`` pipeline for every
demo study that has no run yet) and :func:`wait_for_reviews` (until the first runs wait for
review). Idempotent: a second ``medimg up`` trains and submits nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from medimg_kernel.phantom.demo import DemoManifest
from medimg_hub.pacs.connection import pacs_connection
from medimg_hub.pipeline.models import TaskRecord
from medimg_hub.pipeline.service import RunTarget, TaskService
from medimg_hub.settings import Settings

DEMO_PIPELINE = "organ-segmentation"
DEMO_OWNER = "demo"


def ensure_demo_model(settings: Settings, progress: Callable[[int], object] | None = None) -> tuple[int, bool]:
    """The registered model's version, training one first when none is registered.

    Returns
    -------
    (int, bool)
        Version number, and whether this call trained it.
    """
    from medimg_kernel.registry import ensure_segmentation_model

    loaded, trained = ensure_segmentation_model(
        pacs_connection(settings).client(), settings.mlflow_tracking_uri,
        name=settings.mlflow.registered_model, alias=settings.mlflow.model_alias, progress=progress,
    )
    return loaded.version, trained


def submit_demo_runs(service: TaskService, manifest: DemoManifest,
                     datasets: Mapping[str, str]) -> list[TaskRecord]:
    """Submit the pipeline for each demo study without a run of it yet, as a run of the study's dataset.

    ``datasets`` maps StudyInstanceUID → dataset (the platform database's membership): the
    dataset decides who may see the run and review it. Studies in no dataset are skipped.
    """
    done = {t.study_instance_uid for t in service.list_tasks(pipeline_id=DEMO_PIPELINE, limit=10_000)}
    by_dataset: dict[str, list[RunTarget]] = defaultdict(list)
    for study in manifest.studies:
        dataset = datasets.get(study.study_instance_uid)
        if study.study_instance_uid not in done and dataset is not None:
            by_dataset[dataset].append(RunTarget(study.study_instance_uid, study.series_instance_uid))
    submitted: list[TaskRecord] = []
    for dataset, targets in sorted(by_dataset.items()):
        submitted += service.submit(DEMO_PIPELINE, {}, owner=DEMO_OWNER, targets=targets, dataset=dataset)
    return submitted


def wait_for_reviews(service: TaskService, task_ids: Sequence[str], *, at_least: int, timeout_s: float,
                     progress: Callable[[int], object] | None = None) -> int:
    """Wait until ``at_least`` of the runs wait for review (or failed); returns how many wait."""
    deadline = time.monotonic() + timeout_s
    reported = 0
    while True:
        tasks = [service.task(t) for t in task_ids]
        waiting = sum(t.status.value == "waiting_review" for t in tasks)
        finished = sum(t.status.value in ("waiting_review", "failed", "cancelled") for t in tasks)
        if progress and finished > reported:
            progress(finished - reported)
            reported = finished
        if finished >= min(at_least, len(tasks)) or time.monotonic() > deadline:
            return waiting
        time.sleep(1.0)
