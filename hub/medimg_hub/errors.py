"""Errors of the hub side, rooted at :class:`medimg_kernel.errors.MedImgError` like the kernel's.

The task store's errors live here: only hub-side code (the store, its workers, the platform API)
raises or handles them; kernels see the platform API's HTTP answers instead
(:class:`medimg_kernel.errors.PlatformAPIError`).
"""

from __future__ import annotations

from medimg_kernel.errors import MedImgError


class TaskStoreError(MedImgError, RuntimeError):
    """The task store cannot do what was asked (root of the task-store errors)."""


class SchemaVersionError(TaskStoreError):
    """The task database is not at the schema revision this code expects.

    Attributes
    ----------
    current
        The database's revision (``None`` for a database never migrated).
    head
        The revision the code expects.
    """

    def __init__(self, message: str, *, current: str | None, head: str | None) -> None:
        self.current = current
        self.head = head
        super().__init__(message)


class TaskNotFoundError(TaskStoreError, LookupError):
    """No task or job has the given id.

    Attributes
    ----------
    kind
        ``"task"`` or ``"job"``.
    id
        The id that was looked up.
    """

    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"no {kind} with id {id!r}")


class InvalidTransitionError(TaskStoreError, ValueError):
    """A job cannot make the requested state change.

    Attributes
    ----------
    job_id
        The job concerned.
    from_status, to_status
        The job's status and the requested one.
    """

    def __init__(self, job_id: str, from_status: str, to_status: str, reason: str) -> None:
        self.job_id = job_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(f"job {job_id}: cannot go from {from_status} to {to_status}: {reason}")


class NotJobOwnerError(InvalidTransitionError):
    """A worker reported on a job it no longer holds (it was re-queued, cancelled or finished).

    The worker must stop working on the job and discard its results.
    """


class ConcurrentUpdateError(TaskStoreError):
    """Another session changed the same job between this one's read and its write; reload and retry."""
