"""The execution layer of the task store: what dispatchers, workers and the reconciler call.

Dispatchers list :meth:`~JobExecution.jobs_to_dispatch` and
:meth:`~JobExecution.mark_dispatched`; workers
:meth:`~JobExecution.claim` a queued job, :meth:`~JobExecution.heartbeat`
while running, then :meth:`~JobExecution.succeed` or
:meth:`~JobExecution.fail`; a reconciler lists
:meth:`~JobExecution.stale_jobs` and calls
:meth:`~JobExecution.recover_stale` on each. Each call is one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medimg_kernel.pipeline import StageKind

from medimg_hub.errors import ConcurrentUpdateError, InvalidTransitionError, NotJobOwnerError
from medimg_hub.pipeline.models import Job, JobRecord
from medimg_hub.pipeline.states import JobStatus
from medimg_hub.pipeline.transitions import JobTransitions, check_actor, later

log = logging.getLogger(__name__)


class JobExecution:
    """The operations of dispatchers, workers and the reconciler: ``TaskStore.execution``.

    Parameters
    ----------
    rows
        The transactions and state changes it shares with the rest of the store.
    """

    def __init__(self, rows: JobTransitions) -> None:
        self.rows = rows

    def _owned_running(self, session: Session, job_id: str, worker_id: str, target: JobStatus) -> Job:
        job = self.rows.job(session, job_id)
        if job.status != JobStatus.RUNNING or job.worker_id != worker_id:
            raise NotJobOwnerError(
                job_id, job.status, target,
                f"worker {worker_id!r} does not hold it (status {job.status}, worker {job.worker_id!r}); "
                "stop working on it and discard the results",
            )
        return job

    def jobs_to_dispatch(
        self, *, worker_group: str | None = None, redispatch_after_s: float | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Queued jobs whose time has come and that need a broker message.

        Parameters
        ----------
        worker_group
            Only this group's jobs.
        redispatch_after_s
            Also return jobs dispatched longer ago than this without being claimed (the
            broker lost the message). ``None``: only jobs never dispatched.
        """
        now = self.rows.now()
        query = select(Job).where(Job.status == JobStatus.QUEUED.value, Job.eligible_at <= now)
        never = Job.dispatched_at.is_(None)
        if redispatch_after_s is None:
            query = query.where(never)
        else:
            query = query.where(never | (Job.dispatched_at < later(now, -redispatch_after_s)))
        if worker_group is not None:
            query = query.where(Job.worker_group == worker_group)
        with self.rows.transaction() as session:
            return [JobRecord.from_row(j) for j in session.scalars(query.order_by(Job.eligible_at, Job.id).limit(limit))]

    def mark_dispatched(self, job_id: str) -> JobRecord:
        """Record that a broker message for this queued job was sent (not a state change)."""
        with self.rows.transaction() as session:
            job = self.rows.job(session, job_id)
            if job.status != JobStatus.QUEUED:
                raise InvalidTransitionError(job_id, job.status, JobStatus.QUEUED, "only queued jobs are dispatched")
            job.dispatched_at = self.rows.now()
            return JobRecord.from_row(job)

    def claim(self, job_id: str, worker_id: str) -> JobRecord | None:
        """Take a queued job for ``worker_id``; ``None`` if it is not claimable now.

        At most one of several concurrent claims of a job wins; the others get ``None``
        (already running, finished, cancelled, or not yet eligible after a failure).
        A worker that gets ``None`` drops the message without running anything.
        """
        check_actor(worker_id)
        try:
            return self._claim(job_id, worker_id)
        except ConcurrentUpdateError:
            log.info("job %s: claim by %s lost a race", job_id, worker_id)
            return None

    def _claim(self, job_id: str, worker_id: str) -> JobRecord | None:
        with self.rows.transaction() as session:
            job = self.rows.job(session, job_id)
            if job.kind != StageKind.AUTO:
                raise InvalidTransitionError(job_id, job.status, JobStatus.RUNNING, "manual jobs are not run by workers")
            now = self.rows.now()
            if job.status != JobStatus.QUEUED or (job.eligible_at is not None and job.eligible_at > now):
                log.info("job %s not claimable by %s (status %s)", job_id, worker_id, job.status)
                return None
            job.attempts += 1
            self.rows.move(session, job, JobStatus.RUNNING, worker_id, f"attempt {job.attempts} of {job.max_attempts}")
            job.worker_id = worker_id
            job.started_at = job.heartbeat_at = now
            job.finished_at = None
            return JobRecord.from_row(job)

    def heartbeat(self, job_id: str, worker_id: str) -> JobRecord:
        """Record that ``worker_id`` is still running the job.

        Returns the job; when ``cancel_requested`` is true the worker must stop and call
        :meth:`confirm_cancelled`. Raises :class:`NotJobOwnerError` when the worker no
        longer holds the job (it was re-queued after missed heartbeats): stop at once.
        """
        with self.rows.transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.RUNNING)
            job.heartbeat_at = self.rows.now()
            return JobRecord.from_row(job)

    def succeed(self, job_id: str, worker_id: str, outputs: Mapping[str, Any] | None = None) -> JobRecord:
        """The worker finished the job; dependents whose dependencies are done become runnable.

        ``outputs``: JSON-compatible results (SEG/SR SOP Instance UIDs, executed notebook, MLflow run id).
        """
        with self.rows.transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.SUCCEEDED)
            job.outputs = {**job.outputs, **dict(outputs or {})}
            job.error = None
            self.rows.move(session, job, JobStatus.SUCCEEDED, worker_id)
            self.rows.release_dependents(session, job, worker_id)
            return JobRecord.from_row(job)

    def fail(self, job_id: str, worker_id: str, error: str, *, retryable: bool = True) -> JobRecord:
        """The attempt failed: re-queue after the backoff while attempts remain, else ``failed``.

        A job whose cancellation was requested becomes ``cancelled`` instead. ``retryable=False``
        (e.g. invalid input) fails the job at once. Dependents of a failed job are cancelled.
        """
        with self.rows.transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.FAILED)
            job.error = error
            self._end_attempt(session, job, worker_id, f"attempt {job.attempts} failed: {error}", retryable)
            return JobRecord.from_row(job)

    def _end_attempt(self, session: Session, job: Job, actor: str, detail: str, retryable: bool) -> None:
        """Re-queue (with backoff), cancel or fail a running job whose attempt ended badly."""
        if job.cancel_requested_at is not None:
            self.rows.move(session, job, JobStatus.CANCELLED, actor, f"{detail}; cancellation was requested")
            self.rows.cancel_dependents(session, job, actor)
        elif retryable and job.attempts < job.max_attempts:
            delay = min(job.backoff_s * job.backoff_factor ** max(job.attempts - 1, 0), job.max_backoff_s)
            job.eligible_at = later(self.rows.now(), delay)
            self.rows.move(session, job, JobStatus.QUEUED, actor, f"{detail}; retry in {delay:g} s")
            job.worker_id = job.dispatched_at = job.heartbeat_at = None
        else:
            self.rows.move(session, job, JobStatus.FAILED, actor, f"{detail}; no attempts left" if retryable else detail)
            self.rows.cancel_dependents(session, job, actor)

    def confirm_cancelled(self, job_id: str, worker_id: str) -> JobRecord:
        """The worker stopped a running job after a cancel request (seen in :meth:`heartbeat`)."""
        with self.rows.transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.CANCELLED)
            if job.cancel_requested_at is None:
                raise InvalidTransitionError(job_id, job.status, JobStatus.CANCELLED, "no cancellation was requested")
            self.rows.move(session, job, JobStatus.CANCELLED, worker_id, f"stopped on request of {job.cancel_requested_by}")
            self.rows.cancel_dependents(session, job, worker_id)
            return JobRecord.from_row(job)

    def stale_jobs(self, stale_after_s: float) -> list[JobRecord]:
        """Running jobs whose last heartbeat is older than ``stale_after_s`` seconds."""
        cutoff = later(self.rows.now(), -stale_after_s)
        query = select(Job).where(Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < cutoff)
        with self.rows.transaction() as session:
            return [JobRecord.from_row(j) for j in session.scalars(query.order_by(Job.heartbeat_at))]

    def recover_stale(self, job_id: str, *, stale_after_s: float, actor: str = "reconciler") -> JobRecord | None:
        """Re-queue (attempts left), fail (none left) or cancel (requested) a job whose worker vanished.

        Re-checked inside the transaction: returns ``None`` when the job is no longer
        running with a stale heartbeat (its worker came back or finished meanwhile). The
        old worker, if it still lives, gets :class:`NotJobOwnerError` on its next call.
        """
        check_actor(actor)
        with self.rows.transaction() as session:
            job = self.rows.job(session, job_id)
            cutoff = later(self.rows.now(), -stale_after_s)
            if job.status != JobStatus.RUNNING or job.heartbeat_at is None or job.heartbeat_at >= cutoff:
                return None
            job.error = f"worker {job.worker_id} stopped sending heartbeats (last {job.heartbeat_at.isoformat()})"
            self._end_attempt(session, job, actor, job.error, retryable=True)
            return JobRecord.from_row(job)
