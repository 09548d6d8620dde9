"""Database models of the task store (SQLAlchemy 2), and read-only records.

Tables
------
``tasks``
    One pipeline run: pipeline id and version, owner, dataset, study/series, the validated
    parameters. Its status is not stored: it is derived from its jobs.
``jobs``
    One stage of a run: status, attempts, worker, heartbeat, next eligible time, outputs,
    error. ``version`` is SQLAlchemy's version counter: every UPDATE is a compare-and-set
    on it, so two sessions cannot both move a job from the same state.
``job_history``
    Append-only: one row per state change (and per cancel request), with actor and detail.

Times are timezone-aware UTC in Python; SQLite stores them as naive UTC text,
PostgreSQL as ``timestamptz``. Schema changes go through Alembic
(:mod:`medimg_hub.db.migrations`): change the models, then add a revision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from medimg_hub.db.base import Base, UTCDateTime
from medimg_hub.pipeline.states import JobStatus, TaskStatus, derive_task_status

_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)


class Task(Base):
    """One pipeline run."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128), index=True)
    dataset: Mapped[str | None] = mapped_column(String(128), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    jobs: Mapped[list[Job]] = relationship(back_populates="task", order_by="Job.position")


class Job(Base):
    """One stage of one run."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("task_id", "stage_id"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        Index("ix_jobs_status_eligible_at", "status", "eligible_at"),
        Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    stage_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    worker_group: Mapped[str | None] = mapped_column(String(64))
    depends_on: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    backoff_s: Mapped[float] = mapped_column(Float)
    backoff_factor: Mapped[float] = mapped_column(Float)
    max_backoff_s: Mapped[float] = mapped_column(Float)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    cancel_requested_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    eligible_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer)
    task: Mapped[Task] = relationship(back_populates="jobs")

    __mapper_args__ = {"version_id_col": version}


class JobHistory(Base):
    """One state change of a job (append-only)."""

    __tablename__ = "job_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)


# --- read-only records handed out by the store ---------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """A snapshot of a job (see :class:`Job` for the fields)."""

    id: str
    task_id: str
    stage_id: str
    kind: str
    worker_group: str | None
    depends_on: tuple[str, ...]
    status: JobStatus
    attempts: int
    max_attempts: int
    timeout_s: float | None
    parameters: dict[str, Any]
    outputs: dict[str, Any]
    error: str | None
    worker_id: str | None
    decided_by: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    eligible_at: datetime | None
    dispatched_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, job: Job) -> JobRecord:
        """Copy an ORM row."""
        return cls(
            id=job.id, task_id=job.task_id, stage_id=job.stage_id, kind=job.kind,
            worker_group=job.worker_group, depends_on=tuple(job.depends_on), status=JobStatus(job.status),
            attempts=job.attempts, max_attempts=job.max_attempts, timeout_s=job.timeout_s,
            parameters=dict(job.parameters), outputs=dict(job.outputs or {}), error=job.error,
            worker_id=job.worker_id, decided_by=job.decided_by,
            cancel_requested=job.cancel_requested_at is not None, created_at=job.created_at,
            updated_at=job.updated_at, eligible_at=job.eligible_at, dispatched_at=job.dispatched_at,
            started_at=job.started_at, heartbeat_at=job.heartbeat_at, finished_at=job.finished_at,
        )


@dataclass(frozen=True)
class TaskRecord:
    """A snapshot of a task and its jobs (in stage order); ``status`` is derived from the jobs."""

    id: str
    pipeline_id: str
    pipeline_version: str
    owner: str
    dataset: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    parameters: dict[str, Any]
    created_at: datetime
    status: TaskStatus
    jobs: tuple[JobRecord, ...]

    @classmethod
    def from_row(cls, task: Task) -> TaskRecord:
        """Copy an ORM row with its jobs."""
        jobs = tuple(JobRecord.from_row(j) for j in task.jobs)
        return cls(
            id=task.id, pipeline_id=task.pipeline_id, pipeline_version=task.pipeline_version,
            owner=task.owner, dataset=task.dataset, study_instance_uid=task.study_instance_uid,
            series_instance_uid=task.series_instance_uid, parameters=dict(task.parameters),
            created_at=task.created_at, status=derive_task_status(j.status for j in jobs), jobs=jobs,
        )

    def job(self, stage_id: str) -> JobRecord:
        """The job of stage ``stage_id`` (``KeyError`` if there is none)."""
        for job in self.jobs:
            if job.stage_id == stage_id:
                return job
        raise KeyError(f"task {self.id} has no stage {stage_id!r}")


@dataclass(frozen=True)
class HistoryRecord:
    """One row of ``job_history``; ``from_status`` is ``None`` for a job's creation."""

    id: int
    job_id: str
    task_id: str
    at: datetime
    actor: str
    from_status: JobStatus | None
    to_status: JobStatus
    detail: str | None

    @classmethod
    def from_row(cls, row: JobHistory) -> HistoryRecord:
        """Copy an ORM row."""
        return cls(
            id=row.id, job_id=row.job_id, task_id=row.task_id, at=row.at, actor=row.actor,
            from_status=JobStatus(row.from_status) if row.from_status else None,
            to_status=JobStatus(row.to_status), detail=row.detail,
        )
