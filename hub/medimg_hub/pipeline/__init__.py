"""Pipelines as tasks: the durable task store (hub side).

:class:`TaskStore` keeps tasks (pipeline runs) and jobs (their stages) in SQLite or
PostgreSQL and enforces the job state machine of :mod:`.states`; the schema is
migrated with :func:`medimg_hub.db.migrations.upgrade`. Descriptors are in
:mod:`medimg_kernel.pipeline`; the tasks API (:mod:`.api`, rules in :mod:`.access`) is collected by the
platform API. May import: ``medimg_hub.access``, ``medimg_hub.pacs``, ``medimg_hub.db``, ``medimg_hub.servers``,
``medimg_hub.settings``, ``medimg_hub.secrets``, ``medimg_hub.errors``, the platform API's base handler,
``medimg_kernel``.
"""

from __future__ import annotations

from medimg_hub.pipeline.models import HistoryRecord, JobRecord, TaskRecord
from medimg_hub.pipeline.states import JobStatus, TaskStatus, derive_task_status
from medimg_hub.pipeline.store import TaskStore

#: The database URL comes from the settings: :attr:`medimg_hub.settings.Settings.database_url`.
__all__ = [
    "HistoryRecord", "JobRecord", "JobStatus", "TaskRecord", "TaskStatus",
    "TaskStore", "derive_task_status",
]
