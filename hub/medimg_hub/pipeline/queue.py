"""The Celery side of the task queue: one queue per worker group, one task type.

The broker only carries job ids; the task store is the source of truth. A message may be lost
(the dispatcher re-sends it) or delivered twice (the second ``claim`` finds the job taken and
drops it), so neither loses nor doubles a job. No result backend: outcomes live in the store.
"""

from __future__ import annotations

import logging

from celery import Celery

from medimg_hub.errors import InvalidTransitionError
from medimg_hub.pipeline.broker import RedisBroker
from medimg_hub.pipeline.models import JobRecord
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB = "medimg.run_job"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for the platform's broker (producer and worker alike)."""
    app = Celery("medimg", broker=RedisBroker(settings).url(), set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a message is acknowledged after the job ran, so a dead worker's is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.queue.visibility_timeout_s},
        task_default_queue=settings.queue.worker_groups[0],
        worker_send_task_events=False,
    )
    return app


def send_job(app: Celery, store: TaskStore, job: JobRecord) -> bool:
    """Put one queued job on its group's queue; False if it was no longer queued.

    The job is marked dispatched *before* the message goes out: a worker may claim it the
    moment the message lands. Should sending fail after marking, the dispatcher sends it again
    once ``redispatch_after_s`` has passed.
    """
    try:
        store.execution.mark_dispatched(job.id)
    except InvalidTransitionError:
        log.debug("job %s is no longer queued (claimed or cancelled meanwhile); not sent", job.id)
        return False
    app.send_task(RUN_JOB, args=[job.id], queue=job.worker_group or app.conf.task_default_queue)
    log.info("dispatched job %s (stage %s) to queue %s", job.id, job.stage_id, job.worker_group)
    return True


def dispatch_ready(app: Celery, store: TaskStore, *, redispatch_after_s: float | None = None) -> int:
    """Send every queued job that needs a message; returns how many were sent."""
    jobs = store.execution.jobs_to_dispatch(redispatch_after_s=redispatch_after_s)
    return sum(send_job(app, store, job) for job in jobs)
