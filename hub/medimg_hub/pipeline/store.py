"""The durable task store: the source of truth for pipeline runs (DESIGN.md §6).

The broker only carries wake-up calls; whether a job may run, who runs it and what
came of it is decided here, in one transaction per call:

* :meth:`TaskStore.create_task` validates the run's parameters against the descriptor
  and creates one job per stage (``queued`` / ``waiting_review`` when it has no
  dependencies, ``pending`` otherwise).
* Workers ``store.execution.claim`` a queued job (only one claim of a job can win),
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

Layout: :class:`TaskStore` (creating, reading, cancelling, deciding) holds a
:class:`~.transitions.JobTransitions` (transactions, row access, job state changes) and a
:class:`~.execution.JobExecution` on the same one (``store.execution``: the dispatcher, worker
and reconciler operations). Composition, not inheritance: each part is read on its own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from medimg_kernel.pipeline import (ParameterDescriptor, ParameterType, PipelineDescriptor, StageKind,
                                    validate_parameters)

from medimg_hub.db import make_engine, utcnow
from medimg_hub.db.migrations import current_revision, head_revision
from medimg_hub.errors import InvalidTransitionError, SchemaVersionError
from medimg_hub.pipeline.execution import JobExecution
from medimg_hub.pipeline.models import HistoryRecord, Job, JobHistory, JobRecord, Task, TaskRecord
from medimg_hub.pipeline.states import DECISIONS, DONE_OK, TERMINAL, JobStatus, TaskStatus, initial_status
from medimg_hub.pipeline.transitions import JobTransitions, check_actor

log = logging.getLogger(__name__)


class TaskStore:
    """Tasks and jobs in a SQL database (SQLite by default, PostgreSQL by URL).

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:///var/tasks.sqlite`` or
        ``postgresql://user@host/db`` (psycopg 3). The database must have been migrated
        with :func:`medimg_hub.db.migrations.upgrade`.
    clock
        Returns the current timezone-aware UTC time (injected by tests).

    Raises
    ------
    SchemaVersionError
        The database is not at the newest schema revision; the message names the command.
    """

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = make_engine(url)
        try:
            self._check_schema(url)
        except BaseException:
            self._engine.dispose()
            raise
        self._rows = JobTransitions(self._engine, clock)
        #: What dispatchers, workers and the reconciler call (:class:`~.execution.JobExecution`).
        self.execution = JobExecution(self._rows)

    def _check_schema(self, url: str) -> None:
        current, head = current_revision(self._engine), head_revision()
        if current != head:
            shown = self._engine.url.render_as_string(hide_password=True)
            state = "has no task-store schema" if current is None else f"is at revision {current}"
            raise SchemaVersionError(
                f"task database {shown} {state}, this code needs revision {head}; migrate it with "
                f"`medimg migrate` (or `python -m medimg_hub.db.migrations upgrade '{shown}'`)",
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
        check_actor(owner)
        now = self._rows.now()
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
        with self._rows.transaction() as session:
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
        with self._rows.transaction() as session:
            return TaskRecord.from_row(self._rows.task(session, task_id))

    def get_job(self, job_id: str) -> JobRecord:
        """One job (``TaskNotFoundError`` if unknown)."""
        with self._rows.transaction() as session:
            return JobRecord.from_row(self._rows.job(session, job_id))

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
        with self._rows.transaction() as session:
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
        with self._rows.transaction() as session:
            return [JobRecord.from_row(j) for j in session.scalars(query)]

    def history(self, *, task_id: str | None = None, job_id: str | None = None) -> list[HistoryRecord]:
        """State changes of a task or a job, in the order they happened."""
        query = select(JobHistory).order_by(JobHistory.id)
        if task_id is not None:
            query = query.where(JobHistory.task_id == task_id)
        if job_id is not None:
            query = query.where(JobHistory.job_id == job_id)
        with self._rows.transaction() as session:
            return [HistoryRecord.from_row(h) for h in session.scalars(query)]

    # --- people -----------------------------------------------------------------------------------

    def cancel_task(self, task_id: str, actor: str, reason: str | None = None) -> TaskRecord:
        """Cancel every open job of a task; running jobs get a cancel request their worker honours.

        Jobs already final are left as they are; cancelling a finished task changes nothing.
        """
        check_actor(actor)
        with self._rows.transaction() as session:
            task = self._rows.task(session, task_id)
            for job in task.jobs:
                self._rows.cancel_one(session, self._rows.job(session, job.id), actor, reason)
            session.flush()
            session.refresh(task)
            return TaskRecord.from_row(task)

    def cancel_job(self, job_id: str, actor: str, reason: str | None = None) -> JobRecord:
        """Cancel one open job (and the jobs that depend on it); a running one gets a cancel request.

        Raises :class:`InvalidTransitionError` for a job that is already final.
        """
        check_actor(actor)
        with self._rows.transaction() as session:
            job = self._rows.job(session, job_id)
            if JobStatus(job.status) in TERMINAL:
                raise InvalidTransitionError(job_id, job.status, JobStatus.CANCELLED, f"{job.status} is final")
            self._rows.cancel_one(session, job, actor, reason)
            if job.status == JobStatus.CANCELLED:
                self._rows.cancel_dependents(session, job, actor)
            return JobRecord.from_row(job)

    def decide(
        self,
        job_id: str,
        decision: JobStatus | str,
        actor: str,
        reason: str | None = None,
        outputs: Mapping[str, Any] | None = None,
        on_decided: Callable[[Session, Job, datetime], None] | None = None,
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
        on_decided
            Called with the session, the decided job and the time, inside the decision's
            transaction (e.g. to enqueue its deliveries: :mod:`medimg_hub.pipeline.decisions`).
            If it raises, nothing of the decision is stored.

        Raises
        ------
        InvalidTransitionError
            An auto job, a job not waiting for review, or an unknown decision.
        """
        check_actor(actor)
        with self._rows.transaction() as session:
            job = self._rows.job(session, job_id)
            if job.kind != StageKind.MANUAL:
                raise InvalidTransitionError(job_id, job.status, str(decision),
                                             "only manual stages are decided; auto stages are finished by their worker")
            if decision not in DECISIONS:
                raise InvalidTransitionError(job_id, job.status, str(decision),
                                             f"a decision is one of {sorted(DECISIONS)}")
            self._rows.move(session, job, JobStatus(decision), actor, reason)
            job.decided_by = actor
            job.outputs = {**job.outputs, **dict(outputs or {})}
            if job.status in DONE_OK:
                self._rows.release_dependents(session, job, actor)
            else:
                self._rows.cancel_dependents(session, job, actor)
            if on_decided is not None:
                on_decided(session, job, self._rows.now())
            return JobRecord.from_row(job)
