"""Pipelines as tasks: the durable task store (hub side).

:class:`TaskStore` keeps tasks (pipeline runs) and jobs (their stages) in SQLite or
PostgreSQL and enforces the job state machine of :mod:`.states`; the schema is
migrated with :func:`.migrations.upgrade`. Descriptors are in
:mod:`medimg_kernel.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

from .migrations import upgrade
from .models import HistoryRecord, JobRecord, TaskRecord
from .states import JobStatus, TaskStatus, derive_task_status
from .store import TaskStore

#: File name of the default SQLite task database inside the platform's ``var/`` folder.
DEFAULT_DATABASE_FILE = "tasks.sqlite"


def database_url(var_dir: Path, configured: str = "") -> str:
    """The task database URL: ``configured`` when set, else SQLite in ``var_dir``."""
    return configured or f"sqlite:///{(Path(var_dir) / DEFAULT_DATABASE_FILE).resolve()}"


__all__ = [
    "DEFAULT_DATABASE_FILE", "HistoryRecord", "JobRecord", "JobStatus", "TaskRecord", "TaskStatus",
    "TaskStore", "database_url", "derive_task_status", "upgrade",
]
