"""The tasks API under ``{prefix}api/``: list, show, submit, cancel, decide (rules in :mod:`.access`).

``GET api/tasks`` · ``GET api/tasks/{id}`` · ``POST api/tasks`` (``{"pipeline", "dataset",
"parameters", "studies"}``) · ``POST api/tasks/{id}/cancel`` (``{"reason"}``) ·
``POST api/jobs/{id}/decide`` (``{"decision", "reason", "outputs"}``). Every call is audited.
"""

from __future__ import annotations

import logging
from typing import Any

from medimg_kernel.errors import MedImgError

from medimg_hub.errors import InvalidTransitionError
from medimg_hub.pipeline.access import TaskAccessError
from medimg_hub.platform_api.base import PlatformHandler

log = logging.getLogger(__name__)

_ID = r"([0-9a-f-]{36})"


class TasksHandler(PlatformHandler):
    """Base of the tasks handlers: error mapping (JSON bodies: :meth:`PlatformHandler.body`)."""

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a :class:`TaskAccess` operation in a thread, turning refusals into fixed-body errors."""
        try:
            return await self.ctx.run(fn, self.user, *args)
        except TaskAccessError as exc:
            self.audit_fields["dataset"] = exc.dataset
            self.refuse(exc.status, exc.detail)
        except (InvalidTransitionError, ValueError, LookupError, MedImgError) as exc:
            self.audit_fields["detail"] = type(exc).__name__
            self.set_status(409 if isinstance(exc, InvalidTransitionError) else 400)
            self.write_json({"error": str(exc)})
            return None


class TaskListHandler(TasksHandler):
    route = "api:tasks"

    async def get(self) -> None:
        self.action = "task.list"
        try:
            limit = min(int(self.get_query_argument("limit", "100")), 1000)
        except ValueError:
            self.refuse(400, "limit must be an integer")
        tasks = await self.call(self.ctx.tasks.list, limit)
        self.audit_fields["detail"] = f"{len(tasks)} tasks"
        self.write_json(tasks)

    async def post(self) -> None:
        self.action = "task.submit"
        body = self.body()
        self.audit_fields["dataset"] = body.get("dataset") if isinstance(body.get("dataset"), str) else None
        created = await self.call(self.ctx.tasks.submit, body)
        if created is not None:
            self.audit_fields["detail"] = "tasks " + ",".join(t["id"] for t in created)
            self.set_status(201)
            self.write_json(created)


class TaskHandler(TasksHandler):
    route = "api:task"

    async def get(self, task_id: str) -> None:
        self.action = "task.show"
        task = await self.call(self.ctx.tasks.show, task_id)
        self.audit_fields.update(dataset=task["dataset"], study=task["study_instance_uid"], detail=f"task {task_id}")
        self.write_json(task)


class TaskCancelHandler(TasksHandler):
    route = "api:task:cancel"

    async def post(self, task_id: str) -> None:
        self.action = "task.cancel"
        reason = self.body().get("reason")
        self.audit_fields["detail"] = f"task {task_id}"
        task = await self.call(self.ctx.tasks.cancel, task_id, reason if isinstance(reason, str) else None)
        if task is not None:
            self.audit_fields.update(dataset=task["dataset"], study=task["study_instance_uid"])
            self.write_json(task)


class JobDecideHandler(TasksHandler):
    route = "api:job:decide"

    async def post(self, job_id: str) -> None:
        self.action = "task.decide"
        self.audit_fields["detail"] = f"job {job_id}"
        result = await self.call(self.ctx.tasks.decide, job_id, self.body())
        if result is not None:
            status, answer, dataset = result
            self.audit_fields["dataset"] = dataset
            if status == 202:
                self.action = "task.propose"
            self.set_status(status)
            self.write_json(answer)


default_handlers = [
    (r"api/tasks/?", TaskListHandler),
    (rf"api/tasks/{_ID}/?", TaskHandler),
    (rf"api/tasks/{_ID}/cancel/?", TaskCancelHandler),
    (rf"api/jobs/{_ID}/decide/?", JobDecideHandler),
]
