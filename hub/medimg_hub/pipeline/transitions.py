"""Row access and job state changes inside one transaction, shared by :class:`~.store.TaskStore` and
:class:`~.execution.JobExecution` (both hold the same :class:`JobTransitions`).

Every state change goes through :meth:`JobTransitions.move`, which checks it against the
state machine (:mod:`.states`) and writes a ``job_history`` row with the actor. On
PostgreSQL the job rows are locked (``SELECT ... FOR UPDATE``); a concurrent change
surfaces as :class:`~medimg_hub.errors.ConcurrentUpdateError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.pipeline import StageKind

from medimg_hub.errors import ConcurrentUpdateError, TaskNotFoundError, TaskStoreError
from medimg_hub.pipeline.models import Job, JobHistory, Task
from medimg_hub.pipeline.states import DONE_OK, TERMINAL, JobStatus, check_transition, ready_status

log = logging.getLogger(__name__)

_OPEN = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.WAITING_REVIEW)


class JobTransitions:
    """Transactions, row access and the job state changes that every store operation uses.

    Parameters
    ----------
    engine
        The task database (already checked to be at the newest schema).
    clock
        Returns the current timezone-aware UTC time.
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        #: PostgreSQL locks job rows (``SELECT ... FOR UPDATE``); SQLite locks the database at BEGIN.
        self.lock_rows = engine.dialect.name != "sqlite"
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        try:
            with self._sessions() as session, session.begin():
                yield session
        except StaleDataError as exc:
            raise ConcurrentUpdateError(f"a job changed concurrently ({exc}); reload it and try again") from exc

    def now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise TaskStoreError("the store's clock returned a naive datetime; it must return UTC-aware times")
        return now

    def job(self, session: Session, job_id: str) -> Job:
        query = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        job = session.scalars(query.with_for_update() if self.lock_rows else query).one_or_none()
        if job is None:
            raise TaskNotFoundError("job", job_id)
        return job

    def task(self, session: Session, task_id: str) -> Task:
        query = select(Task).where(Task.id == task_id).options(selectinload(Task.jobs))
        task = session.scalars(query).one_or_none()
        if task is None:
            raise TaskNotFoundError("task", task_id)
        return task

    def move(self, session: Session, job: Job, target: JobStatus, actor: str, detail: str | None = None) -> None:
        """Change a job's status (checked by the state machine) and record it."""
        current = JobStatus(job.status)
        check_transition(job.id, StageKind(job.kind), current, target)
        now = self.now()
        job.status = target.value
        job.updated_at = now
        if target in TERMINAL:
            job.finished_at = now
        session.add(JobHistory(job_id=job.id, task_id=job.task_id, at=now, actor=actor,
                               from_status=current.value, to_status=target.value, detail=detail))
        log.info("job %s (%s): %s -> %s by %s", job.id, job.stage_id, current, target, actor)

    def siblings(self, session: Session, job: Job) -> list[Job]:
        query = (select(Job).where(Job.task_id == job.task_id, Job.id != job.id).order_by(Job.position)
                 .execution_options(populate_existing=True))
        return list(session.scalars(query.with_for_update() if self.lock_rows else query))

    def release_dependents(self, session: Session, job: Job, actor: str) -> None:
        """Make pending jobs whose dependencies are all done runnable (or reviewable)."""
        siblings = self.siblings(session, job)
        status = {j.stage_id: JobStatus(j.status) for j in [*siblings, job]}
        for other in siblings:
            if status[other.stage_id] is JobStatus.PENDING and all(status[d] in DONE_OK for d in other.depends_on):
                target = ready_status(StageKind(other.kind))
                self.move(session, other, target, actor, f"dependencies done ({', '.join(other.depends_on)})")
                if target is JobStatus.QUEUED:
                    other.eligible_at = self.now()

    def cancel_dependents(self, session: Session, job: Job, actor: str) -> None:
        """Cancel the open jobs that (transitively) depend on ``job``: they can never run."""
        siblings = self.siblings(session, job)
        blocked = {job.stage_id}
        changed = True
        while changed:
            changed = False
            for other in siblings:
                if other.stage_id not in blocked and blocked & set(other.depends_on):
                    blocked.add(other.stage_id)
                    changed = True
        for other in siblings:
            if other.stage_id in blocked and JobStatus(other.status) in _OPEN:
                self.move(session, other, JobStatus.CANCELLED, actor, f"dependency {job.stage_id} ended {job.status}")

    def cancel_one(self, session: Session, job: Job, actor: str, reason: str | None) -> None:
        detail = f"cancelled: {reason}" if reason else "cancelled"
        if job.status in _OPEN:
            self.move(session, job, JobStatus.CANCELLED, actor, detail)
        elif job.status == JobStatus.RUNNING and job.cancel_requested_at is None:
            now = self.now()
            job.cancel_requested_at, job.cancel_requested_by, job.updated_at = now, actor, now
            session.add(JobHistory(job_id=job.id, task_id=job.task_id, at=now, actor=actor, from_status=job.status,
                                   to_status=job.status, detail=f"cancel requested: {reason or 'no reason given'}"))


def check_actor(actor: str) -> None:
    """Refuse an actor (user, worker or service name) that is empty or longer than 128 characters."""
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 128:
        raise ConfigurationError(f"actor must be a non-empty name of at most 128 characters, got {actor!r}")


def later(now: datetime, seconds: float) -> datetime:
    """``now`` moved by ``seconds`` (negative: earlier)."""
    return now + timedelta(seconds=seconds)
