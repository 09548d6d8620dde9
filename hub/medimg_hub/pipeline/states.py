"""The job state machine and the task status derived from a task's jobs.

Allowed changes (anything else raises :class:`InvalidTransitionError`):

==============  =====================================  ==========================================
kind            from                                   to
==============  =====================================  ==========================================
auto            pending                                queued (dependencies done), cancelled
auto            queued                                 running (claim), cancelled
auto            running                                succeeded, failed, cancelled (worker
                                                       honoured a cancel request), queued (retry
                                                       after a failure or a vanished worker)
manual          pending                                waiting_review (dependencies done),
                                                       cancelled
manual          waiting_review                         accepted, corrected, rejected (only
                                                       :meth:`TaskStore.decide`), cancelled
==============  =====================================  ==========================================

A job's dependencies are done when each is ``succeeded``, ``accepted`` or ``corrected``.
When a job ends in ``failed``, ``rejected`` or ``cancelled``, the jobs that depend on it
(directly or not) can never run and are cancelled, with the reason in the history.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from medimg_kernel.pipeline import StageKind

from medimg_hub.errors import InvalidTransitionError


class JobStatus(StrEnum):
    """Status of one job (one stage of one task)."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING_REVIEW = "waiting_review"
    ACCEPTED = "accepted"
    CORRECTED = "corrected"
    REJECTED = "rejected"


class TaskStatus(StrEnum):
    """Status of a task, derived from its jobs by :func:`derive_task_status`."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_REVIEW = "waiting_review"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


#: Decisions a reviewer can take on a manual job.
DECISIONS = frozenset({JobStatus.ACCEPTED, JobStatus.CORRECTED, JobStatus.REJECTED})
#: Statuses that satisfy a dependency.
DONE_OK = frozenset({JobStatus.SUCCEEDED, JobStatus.ACCEPTED, JobStatus.CORRECTED})
#: Statuses a job never leaves.
TERMINAL = DONE_OK | {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.REJECTED}

_S = JobStatus
TRANSITIONS: dict[StageKind, dict[JobStatus, frozenset[JobStatus]]] = {
    StageKind.AUTO: {
        _S.PENDING: frozenset({_S.QUEUED, _S.CANCELLED}),
        _S.QUEUED: frozenset({_S.RUNNING, _S.CANCELLED}),
        _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.QUEUED}),
    },
    StageKind.MANUAL: {
        _S.PENDING: frozenset({_S.WAITING_REVIEW, _S.CANCELLED}),
        _S.WAITING_REVIEW: frozenset({_S.ACCEPTED, _S.CORRECTED, _S.REJECTED, _S.CANCELLED}),
    },
}


def initial_status(kind: StageKind, has_dependencies: bool) -> JobStatus:
    """Status of a new job: ``pending`` behind dependencies, else ready to run or review."""
    if has_dependencies:
        return JobStatus.PENDING
    return JobStatus.QUEUED if kind is StageKind.AUTO else JobStatus.WAITING_REVIEW


def ready_status(kind: StageKind) -> JobStatus:
    """Status a pending job moves to once its dependencies are done."""
    return initial_status(kind, has_dependencies=False)


def check_transition(job_id: str, kind: StageKind, current: JobStatus, target: JobStatus) -> None:
    """Refuse a state change the machine does not allow.

    Raises
    ------
    InvalidTransitionError
        Naming the job, both statuses and the allowed targets.
    """
    allowed = TRANSITIONS[kind].get(current, frozenset())
    if target not in allowed:
        if current in TERMINAL:
            reason = f"{current} is final"
        else:
            reason = f"a {kind} job in {current} may only go to {sorted(allowed) or 'nothing'}"
        raise InvalidTransitionError(job_id, current, target, reason)


def derive_task_status(statuses: Iterable[JobStatus]) -> TaskStatus:
    """The status of a task from its jobs' statuses.

    Once every job is final: ``failed`` if any failed, else ``rejected`` if any was
    rejected, else ``cancelled`` if any was cancelled, else ``succeeded``. Before that:
    ``running`` if any job runs, else ``waiting_review`` if any awaits a person, else
    ``queued`` if any is queued, else ``pending``.
    """
    present = set(statuses)
    if present <= TERMINAL:
        for job_status, task_status in (
            (JobStatus.FAILED, TaskStatus.FAILED),
            (JobStatus.REJECTED, TaskStatus.REJECTED),
            (JobStatus.CANCELLED, TaskStatus.CANCELLED),
        ):
            if job_status in present:
                return task_status
        return TaskStatus.SUCCEEDED
    for job_status, task_status in (
        (JobStatus.RUNNING, TaskStatus.RUNNING),
        (JobStatus.WAITING_REVIEW, TaskStatus.WAITING_REVIEW),
        (JobStatus.QUEUED, TaskStatus.QUEUED),
    ):
        if job_status in present:
            return task_status
    return TaskStatus.PENDING
