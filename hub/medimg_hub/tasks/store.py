"""The durable task store: the source of truth for pipeline runs (DESIGN.md §6).

The broker only carries wake-up calls; whether a job may run, who runs it and what
came of it is decided here, in one transaction per call:

* :meth:`TaskStore.create_task` validates the run's parameters against the descriptor
  and creates one job per stage (``queued`` / ``waiting_review`` when it has no
  dependencies, ``pending`` otherwise).
* Workers :meth:`~TaskStore.claim` a queued job (only one claim of a job can win),
  :meth:`~TaskStore.heartbeat` while running, then :meth:`~TaskStore.succeed` or
  :meth:`~TaskStore.fail` (re-queued with backoff while attempts remain).
* A reconciler lists :meth:`~TaskStore.stale_jobs` and calls
  :meth:`~TaskStore.recover_stale` on each; dispatchers list
  :meth:`~TaskStore.jobs_to_dispatch` and :meth:`~TaskStore.mark_dispatched`.
* People :meth:`~TaskStore.decide` manual jobs and :meth:`~TaskStore.cancel_task`.

Every state change writes a ``job_history`` row with the actor. Concurrency: on
PostgreSQL the job row is locked (``SELECT ... FOR UPDATE``); on SQLite every
transaction takes the write lock at ``BEGIN IMMEDIATE``; on both, UPDATEs compare the
row's version counter. Access control (who may decide for which dataset) belongs to
the API layer in front of the store.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from medimg_kernel.errors import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidTransitionError,
    NotJobOwnerError,
    SchemaVersionError,
    TaskNotFoundError,
    TaskStoreError,
)
from medimg_kernel.pipeline import ParameterDescriptor, ParameterType, PipelineDescriptor, StageKind, validate_parameters

from .migrations import current_revision, head_revision
from .models import HistoryRecord, Job, JobHistory, JobRecord, Task, TaskRecord, make_engine, utcnow
from .states import DECISIONS, DONE_OK, TERMINAL, JobStatus, TaskStatus, check_transition, initial_status, ready_status

log = logging.getLogger(__name__)

_OPEN = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.WAITING_REVIEW)


class TaskStore:
    """Tasks and jobs in a SQL database (SQLite by default, PostgreSQL by URL).

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:///var/tasks.sqlite`` or
        ``postgresql://user@host/db`` (psycopg 3). The database must have been migrated
        with :func:`medimg_hub.tasks.migrations.upgrade`.
    clock
        Returns the current timezone-aware UTC time (injected by tests).

    Raises
    ------
    SchemaVersionError
        The database is not at the newest schema revision; the message names the command.
    """

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = make_engine(url)
        self._clock = clock
        self._lock_rows = self._engine.dialect.name != "sqlite"
        try:
            self._check_schema(url)
        except BaseException:
            self._engine.dispose()
            raise
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def _check_schema(self, url: str) -> None:
        current, head = current_revision(self._engine), head_revision()
        if current != head:
            shown = self._engine.url.render_as_string(hide_password=True)
            state = "has no task-store schema" if current is None else f"is at revision {current}"
            raise SchemaVersionError(
                f"task database {shown} {state}, this code needs revision {head}; migrate it with "
                f"`python -m medimg_hub.tasks.migrations upgrade '{shown}'`",
                current=current,
                head=head,
            )

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        try:
            with self._sessions() as session, session.begin():
                yield session
        except StaleDataError as exc:
            raise ConcurrentUpdateError(f"a job changed concurrently ({exc}); reload it and try again") from exc

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise TaskStoreError("the store's clock returned a naive datetime; it must return UTC-aware times")
        return now

    def _job(self, session: Session, job_id: str) -> Job:
        query = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        job = session.scalars(query.with_for_update() if self._lock_rows else query).one_or_none()
        if job is None:
            raise TaskNotFoundError("job", job_id)
        return job

    def _task(self, session: Session, task_id: str) -> Task:
        query = select(Task).where(Task.id == task_id).options(selectinload(Task.jobs))
        task = session.scalars(query).one_or_none()
        if task is None:
            raise TaskNotFoundError("task", task_id)
        return task

    def _move(self, session: Session, job: Job, target: JobStatus, actor: str, detail: str | None = None) -> None:
        """Change a job's status (checked by the state machine) and record it."""
        current = JobStatus(job.status)
        check_transition(job.id, StageKind(job.kind), current, target)
        now = self._now()
        job.status = target.value
        job.updated_at = now
        if target in TERMINAL:
            job.finished_at = now
        session.add(JobHistory(job_id=job.id, task_id=job.task_id, at=now, actor=actor,
                               from_status=current.value, to_status=target.value, detail=detail))
        log.info("job %s (%s): %s -> %s by %s", job.id, job.stage_id, current, target, actor)

    def _siblings(self, session: Session, job: Job) -> list[Job]:
        query = (select(Job).where(Job.task_id == job.task_id, Job.id != job.id).order_by(Job.position)
                 .execution_options(populate_existing=True))
        return list(session.scalars(query.with_for_update() if self._lock_rows else query))

    def _release_dependents(self, session: Session, job: Job, actor: str) -> None:
        """Make pending jobs whose dependencies are all done runnable (or reviewable)."""
        siblings = self._siblings(session, job)
        status = {j.stage_id: JobStatus(j.status) for j in [*siblings, job]}
        for other in siblings:
            if status[other.stage_id] is JobStatus.PENDING and all(status[d] in DONE_OK for d in other.depends_on):
                target = ready_status(StageKind(other.kind))
                self._move(session, other, target, actor, f"dependencies done ({', '.join(other.depends_on)})")
                if target is JobStatus.QUEUED:
                    other.eligible_at = self._now()

    def _cancel_dependents(self, session: Session, job: Job, actor: str) -> None:
        """Cancel the open jobs that (transitively) depend on ``job``: they can never run."""
        siblings = self._siblings(session, job)
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
                self._move(session, other, JobStatus.CANCELLED, actor, f"dependency {job.stage_id} ended {job.status}")

    def _owned_running(self, session: Session, job_id: str, worker_id: str, target: JobStatus) -> Job:
        job = self._job(session, job_id)
        if job.status != JobStatus.RUNNING or job.worker_id != worker_id:
            raise NotJobOwnerError(
                job_id, job.status, target,
                f"worker {worker_id!r} does not hold it (status {job.status}, worker {job.worker_id!r}); "
                "stop working on it and discard the results",
            )
        return job

    # --- creating and reading ---------------------------------------------------------------------

    def create_task(
        self,
        pipeline: PipelineDescriptor,
        parameters: Mapping[str, Any],
        *,
        owner: str,
        dataset: str | None = None,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
    ) -> TaskRecord:
        """Validate the parameters and record a new run with one job per stage.

        Parameters
        ----------
        pipeline
            The pipeline to run.
        parameters
            Raw parameter values (strings are coerced, see :func:`validate_parameters`).
        owner
            The hub user who starts the run (also the actor of the creation rows).
        dataset
            The dataset the run belongs to (grants are checked by the API layer).
        study_instance_uid, series_instance_uid
            What the run is about; default: the first ``study_uid`` / ``series_uid`` parameter.

        Raises
        ------
        ParameterError
            A parameter is unknown, missing or invalid; nothing is stored.
        """
        values = validate_parameters(pipeline, parameters)
        study = self._uid(study_instance_uid, values, pipeline, ParameterType.STUDY_UID)
        series = self._uid(series_instance_uid, values, pipeline, ParameterType.SERIES_UID)
        _check_actor(owner)
        now = self._now()
        task = Task(id=str(uuid.uuid4()), pipeline_id=pipeline.id, pipeline_version=pipeline.version,
                    owner=owner, dataset=dataset, study_instance_uid=study, series_instance_uid=series,
                    parameters=values, created_at=now)
        for position, stage in enumerate(pipeline.topological_order()):
            status = initial_status(stage.kind, bool(stage.depends_on))
            job = Job(
                id=str(uuid.uuid4()), stage_id=stage.id, position=position, kind=stage.kind.value,
                worker_group=stage.worker_group, depends_on=list(stage.depends_on), status=status.value,
                attempts=0, max_attempts=stage.retry.max_attempts, backoff_s=stage.retry.backoff_s,
                backoff_factor=stage.retry.backoff_factor, max_backoff_s=stage.retry.max_backoff_s,
                timeout_s=stage.timeout_s, parameters=stage.parameter_values(values), outputs={},
                created_at=now, updated_at=now, eligible_at=now if status is JobStatus.QUEUED else None,
            )
            task.jobs.append(job)
        with self._transaction() as session:
            session.add(task)
            session.flush()
            for job in task.jobs:
                session.add(JobHistory(job_id=job.id, task_id=task.id, at=now, actor=owner,
                                       from_status=None, to_status=job.status, detail="created"))
            record = TaskRecord.from_row(task)
        log.info("task %s of pipeline %s created by %s", record.id, pipeline.id, owner)
        return record

    @staticmethod
    def _uid(given: str | None, values: Mapping[str, Any], pipeline: PipelineDescriptor, ptype: ParameterType) -> str | None:
        if given is not None:
            return str(ParameterDescriptor(ptype.value, ptype).coerce(given))
        return next((values[p.name] for p in pipeline.parameters if p.type is ptype and p.name in values), None)

    def get_task(self, task_id: str) -> TaskRecord:
        """The task and its jobs (``TaskNotFoundError`` if unknown)."""
        with self._transaction() as session:
            return TaskRecord.from_row(self._task(session, task_id))

    def get_job(self, job_id: str) -> JobRecord:
        """One job (``TaskNotFoundError`` if unknown)."""
        with self._transaction() as session:
            return JobRecord.from_row(self._job(session, job_id))

    def list_tasks(
        self,
        *,
        owner: str | None = None,
        dataset: str | None = None,
        pipeline_id: str | None = None,
        study_instance_uid: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks matching every filter given, newest first (``status`` is the derived status)."""
        query: Select[tuple[Task]] = select(Task).options(selectinload(Task.jobs)).order_by(Task.created_at.desc(), Task.id)
        for column, value in ((Task.owner, owner), (Task.dataset, dataset), (Task.pipeline_id, pipeline_id),
                              (Task.study_instance_uid, study_instance_uid)):
            if value is not None:
                query = query.where(column == value)
        with self._transaction() as session:
            records = [TaskRecord.from_row(t) for t in session.scalars(query)]
        if status is not None:
            records = [r for r in records if r.status == TaskStatus(status)]
        return records[offset:offset + limit]

    def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        kind: StageKind | str | None = None,
        worker_group: str | None = None,
        dataset: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Jobs matching every filter, oldest change first (e.g. a review worklist)."""
        query = select(Job).join(Task).order_by(Job.updated_at, Job.id).limit(limit)
        for column, value in ((Job.status, status), (Job.kind, kind), (Job.worker_group, worker_group),
                              (Task.dataset, dataset)):
            if value is not None:
                query = query.where(column == str(value))
        with self._transaction() as session:
            return [JobRecord.from_row(j) for j in session.scalars(query)]

    def history(self, *, task_id: str | None = None, job_id: str | None = None) -> list[HistoryRecord]:
        """State changes of a task or a job, in the order they happened."""
        query = select(JobHistory).order_by(JobHistory.id)
        if task_id is not None:
            query = query.where(JobHistory.task_id == task_id)
        if job_id is not None:
            query = query.where(JobHistory.job_id == job_id)
        with self._transaction() as session:
            return [HistoryRecord.from_row(h) for h in session.scalars(query)]

    # --- the execution layer ----------------------------------------------------------------------

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
        now = self._now()
        query = select(Job).where(Job.status == JobStatus.QUEUED.value, Job.eligible_at <= now)
        never = Job.dispatched_at.is_(None)
        if redispatch_after_s is None:
            query = query.where(never)
        else:
            query = query.where(never | (Job.dispatched_at < _later(now, -redispatch_after_s)))
        if worker_group is not None:
            query = query.where(Job.worker_group == worker_group)
        with self._transaction() as session:
            return [JobRecord.from_row(j) for j in session.scalars(query.order_by(Job.eligible_at, Job.id).limit(limit))]

    def mark_dispatched(self, job_id: str) -> JobRecord:
        """Record that a broker message for this queued job was sent (not a state change)."""
        with self._transaction() as session:
            job = self._job(session, job_id)
            if job.status != JobStatus.QUEUED:
                raise InvalidTransitionError(job_id, job.status, JobStatus.QUEUED, "only queued jobs are dispatched")
            job.dispatched_at = self._now()
            return JobRecord.from_row(job)

    def claim(self, job_id: str, worker_id: str) -> JobRecord | None:
        """Take a queued job for ``worker_id``; ``None`` if it is not claimable now.

        At most one of several concurrent claims of a job wins; the others get ``None``
        (already running, finished, cancelled, or not yet eligible after a failure).
        A worker that gets ``None`` drops the message without running anything.
        """
        _check_actor(worker_id)
        try:
            return self._claim(job_id, worker_id)
        except ConcurrentUpdateError:
            log.info("job %s: claim by %s lost a race", job_id, worker_id)
            return None

    def _claim(self, job_id: str, worker_id: str) -> JobRecord | None:
        with self._transaction() as session:
            job = self._job(session, job_id)
            if job.kind != StageKind.AUTO:
                raise InvalidTransitionError(job_id, job.status, JobStatus.RUNNING, "manual jobs are not run by workers")
            now = self._now()
            if job.status != JobStatus.QUEUED or (job.eligible_at is not None and job.eligible_at > now):
                log.info("job %s not claimable by %s (status %s)", job_id, worker_id, job.status)
                return None
            job.attempts += 1
            self._move(session, job, JobStatus.RUNNING, worker_id, f"attempt {job.attempts} of {job.max_attempts}")
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
        with self._transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.RUNNING)
            job.heartbeat_at = self._now()
            return JobRecord.from_row(job)

    def succeed(self, job_id: str, worker_id: str, outputs: Mapping[str, Any] | None = None) -> JobRecord:
        """The worker finished the job; dependents whose dependencies are done become runnable.

        ``outputs``: JSON-compatible results (SEG/SR SOP Instance UIDs, executed notebook, MLflow run id).
        """
        with self._transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.SUCCEEDED)
            job.outputs = {**job.outputs, **dict(outputs or {})}
            job.error = None
            self._move(session, job, JobStatus.SUCCEEDED, worker_id)
            self._release_dependents(session, job, worker_id)
            return JobRecord.from_row(job)

    def fail(self, job_id: str, worker_id: str, error: str, *, retryable: bool = True) -> JobRecord:
        """The attempt failed: re-queue after the backoff while attempts remain, else ``failed``.

        A job whose cancellation was requested becomes ``cancelled`` instead. ``retryable=False``
        (e.g. invalid input) fails the job at once. Dependents of a failed job are cancelled.
        """
        with self._transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.FAILED)
            job.error = error
            self._end_attempt(session, job, worker_id, f"attempt {job.attempts} failed: {error}", retryable)
            return JobRecord.from_row(job)

    def _end_attempt(self, session: Session, job: Job, actor: str, detail: str, retryable: bool) -> None:
        """Re-queue (with backoff), cancel or fail a running job whose attempt ended badly."""
        if job.cancel_requested_at is not None:
            self._move(session, job, JobStatus.CANCELLED, actor, f"{detail}; cancellation was requested")
            self._cancel_dependents(session, job, actor)
        elif retryable and job.attempts < job.max_attempts:
            delay = min(job.backoff_s * job.backoff_factor ** max(job.attempts - 1, 0), job.max_backoff_s)
            job.eligible_at = _later(self._now(), delay)
            self._move(session, job, JobStatus.QUEUED, actor, f"{detail}; retry in {delay:g} s")
            job.worker_id = job.dispatched_at = job.heartbeat_at = None
        else:
            self._move(session, job, JobStatus.FAILED, actor, f"{detail}; no attempts left" if retryable else detail)
            self._cancel_dependents(session, job, actor)

    def confirm_cancelled(self, job_id: str, worker_id: str) -> JobRecord:
        """The worker stopped a running job after a cancel request (seen in :meth:`heartbeat`)."""
        with self._transaction() as session:
            job = self._owned_running(session, job_id, worker_id, JobStatus.CANCELLED)
            if job.cancel_requested_at is None:
                raise InvalidTransitionError(job_id, job.status, JobStatus.CANCELLED, "no cancellation was requested")
            self._move(session, job, JobStatus.CANCELLED, worker_id, f"stopped on request of {job.cancel_requested_by}")
            self._cancel_dependents(session, job, worker_id)
            return JobRecord.from_row(job)

    def stale_jobs(self, stale_after_s: float) -> list[JobRecord]:
        """Running jobs whose last heartbeat is older than ``stale_after_s`` seconds."""
        cutoff = _later(self._now(), -stale_after_s)
        query = select(Job).where(Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < cutoff)
        with self._transaction() as session:
            return [JobRecord.from_row(j) for j in session.scalars(query.order_by(Job.heartbeat_at))]

    def recover_stale(self, job_id: str, *, stale_after_s: float, actor: str = "reconciler") -> JobRecord | None:
        """Re-queue (attempts left), fail (none left) or cancel (requested) a job whose worker vanished.

        Re-checked inside the transaction: returns ``None`` when the job is no longer
        running with a stale heartbeat (its worker came back or finished meanwhile). The
        old worker, if it still lives, gets :class:`NotJobOwnerError` on its next call.
        """
        _check_actor(actor)
        with self._transaction() as session:
            job = self._job(session, job_id)
            cutoff = _later(self._now(), -stale_after_s)
            if job.status != JobStatus.RUNNING or job.heartbeat_at is None or job.heartbeat_at >= cutoff:
                return None
            job.error = f"worker {job.worker_id} stopped sending heartbeats (last {job.heartbeat_at.isoformat()})"
            self._end_attempt(session, job, actor, job.error, retryable=True)
            return JobRecord.from_row(job)

    # --- people -----------------------------------------------------------------------------------

    def cancel_task(self, task_id: str, actor: str, reason: str | None = None) -> TaskRecord:
        """Cancel every open job of a task; running jobs get a cancel request their worker honours.

        Jobs already final are left as they are; cancelling a finished task changes nothing.
        """
        _check_actor(actor)
        with self._transaction() as session:
            task = self._task(session, task_id)
            for job in task.jobs:
                self._cancel_one(session, self._job(session, job.id), actor, reason)
            session.flush()
            session.refresh(task)
            return TaskRecord.from_row(task)

    def cancel_job(self, job_id: str, actor: str, reason: str | None = None) -> JobRecord:
        """Cancel one open job (and the jobs that depend on it); a running one gets a cancel request.

        Raises :class:`InvalidTransitionError` for a job that is already final.
        """
        _check_actor(actor)
        with self._transaction() as session:
            job = self._job(session, job_id)
            if JobStatus(job.status) in TERMINAL:
                raise InvalidTransitionError(job_id, job.status, JobStatus.CANCELLED, f"{job.status} is final")
            self._cancel_one(session, job, actor, reason)
            if job.status == JobStatus.CANCELLED:
                self._cancel_dependents(session, job, actor)
            return JobRecord.from_row(job)

    def _cancel_one(self, session: Session, job: Job, actor: str, reason: str | None) -> None:
        detail = f"cancelled: {reason}" if reason else "cancelled"
        if job.status in _OPEN:
            self._move(session, job, JobStatus.CANCELLED, actor, detail)
        elif job.status == JobStatus.RUNNING and job.cancel_requested_at is None:
            now = self._now()
            job.cancel_requested_at, job.cancel_requested_by, job.updated_at = now, actor, now
            session.add(JobHistory(job_id=job.id, task_id=job.task_id, at=now, actor=actor, from_status=job.status,
                                   to_status=job.status, detail=f"cancel requested: {reason or 'no reason given'}"))

    def decide(
        self,
        job_id: str,
        decision: JobStatus | str,
        actor: str,
        reason: str | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """A person's decision on a manual job waiting for review.

        Parameters
        ----------
        job_id
            A manual job in ``waiting_review``.
        decision
            ``accepted``, ``corrected`` or ``rejected``. Accepted and corrected release the
            dependent stages; rejected cancels them.
        actor
            The hub user deciding (the API layer has checked their review grant).
        reason
            Free text kept in the history.
        outputs
            E.g. the SOP Instance UID of a corrected SEG.

        Raises
        ------
        InvalidTransitionError
            An auto job, a job not waiting for review, or an unknown decision.
        """
        _check_actor(actor)
        with self._transaction() as session:
            job = self._job(session, job_id)
            if job.kind != StageKind.MANUAL:
                raise InvalidTransitionError(job_id, job.status, str(decision),
                                             "only manual stages are decided; auto stages are finished by their worker")
            if decision not in DECISIONS:
                raise InvalidTransitionError(job_id, job.status, str(decision),
                                             f"a decision is one of {sorted(DECISIONS)}")
            self._move(session, job, JobStatus(decision), actor, reason)
            job.decided_by = actor
            job.outputs = {**job.outputs, **dict(outputs or {})}
            if job.status in DONE_OK:
                self._release_dependents(session, job, actor)
            else:
                self._cancel_dependents(session, job, actor)
            return JobRecord.from_row(job)


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 128:
        raise ConfigurationError(f"actor must be a non-empty name of at most 128 characters, got {actor!r}")


def _later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
