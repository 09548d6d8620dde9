"""The dispatcher: the safety net under the queue's fast path.

Submitting a task and finishing a job send the next messages at once; this loop, every
``[queue] dispatch_interval_s``, (1) recovers jobs whose worker stopped heartbeating (re-queued
while attempts remain, else failed, with the reason in their history) and (2) sends messages
for queued jobs that have none or whose message was not claimed within ``redispatch_after_s``
(the broker lost it). Run as ``medimg dispatcher``; ``medimg up`` starts it.
"""

from __future__ import annotations

import logging
import signal
import threading

from celery import Celery

from medimg_hub.pipeline.queue import dispatch_ready, make_celery
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)


def reconcile(store: TaskStore, stale_after_s: float) -> int:
    """Recover every job whose worker vanished; returns how many were recovered."""
    recovered = 0
    for job in store.execution.stale_jobs(stale_after_s):
        outcome = store.execution.recover_stale(job.id, stale_after_s=stale_after_s)
        if outcome is not None:
            recovered += 1
            log.warning("job %s lost its worker %s; now %s", job.id, job.worker_id, outcome.status.value)
    return recovered


def dispatch_pass(app: Celery, store: TaskStore, settings: Settings) -> tuple[int, int]:
    """One pass: reconcile, then dispatch. Returns (recovered, sent)."""
    recovered = reconcile(store, settings.tasks.stale_after_s)
    sent = dispatch_ready(app, store, redispatch_after_s=settings.queue.redispatch_after_s)
    return recovered, sent


def run_dispatcher(settings: Settings, stop: threading.Event | None = None) -> None:
    """Loop until SIGTERM/SIGINT (or ``stop`` is set)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    app = make_celery(settings)
    store = TaskStore(settings.database_url)
    log.info("dispatcher running every %.1f s", settings.queue.dispatch_interval_s)
    try:
        while not stop.is_set():
            try:
                dispatch_pass(app, store, settings)
            except Exception:  # noqa: BLE001 - a broker or database hiccup: log, try again next pass
                log.exception("dispatcher pass failed")
            stop.wait(settings.queue.dispatch_interval_s)
    finally:
        store.close()
