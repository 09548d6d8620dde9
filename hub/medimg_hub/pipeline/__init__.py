"""Pipelines as tasks: the durable task store (hub side).

:class:`TaskStore` keeps tasks (pipeline runs) and jobs (their stages) in SQLite or
PostgreSQL and enforces the job state machine of :mod:`.states`; the schema is
migrated with :func:`.migrations.upgrade`. Descriptors are in
:mod:`medimg_kernel.pipeline`.
"""

from __future__ import annotations

from medimg_hub.db.migrations import upgrade
from medimg_hub.pipeline.models import HistoryRecord, JobRecord, TaskRecord
from medimg_hub.pipeline.states import JobStatus, TaskStatus, derive_task_status
from medimg_hub.pipeline.store import TaskStore

#: The database URL comes from the settings: :attr:`medimg_hub.settings.Settings.database_url`.
__all__ = [
    "HistoryRecord", "JobRecord", "JobStatus", "TaskRecord", "TaskStatus",
    "TaskStore", "derive_task_status", "upgrade",
]
