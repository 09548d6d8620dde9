"""Who may do what with tasks: the rules of the tasks API, on top of :class:`TaskService`.

Rules (dataset rights come from the ``[[datasets]]`` grants of the caller's groups):

* **list / show**: tasks of datasets the caller may ``read``, and the caller's own tasks.
  Any other task is "not found" (404), exactly like one that does not exist.
* **submit**: needs ``write`` on the task's dataset, and every study the run names
  (``studies``, ``study_uid`` parameters, and the studies of ``series_uid`` parameters, looked up
  in the PACS) must be in that dataset. Engineers get ``write``
  on the datasets they develop on; clinicians do not submit.
* **cancel**: the task's owner or a hub admin.
* **decide** (a manual job): ``finalise`` completes the stage through
  :meth:`TaskService.decide` and forgets the job's claims and the finaliser's draft; ``review`` alone records a
  :class:`ReviewProposal` carrying the proposer's draft labels and leaves the job waiting (202);
  ``read`` alone is refused (403).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from medimg_kernel.pipeline import ParameterType

from medimg_hub.access.datasets import DatasetDirectory
from medimg_hub.access.identities import Identity
from medimg_hub.access.models import ReviewProposal, Right
from medimg_hub.db import utcnow
from medimg_hub.errors import TaskNotFoundError
from medimg_hub.pipeline.decisions import attach_draft, settle_job
from medimg_hub.pipeline.models import JobRecord, TaskRecord
from medimg_hub.pipeline.service import RunTarget, TaskService

log = logging.getLogger(__name__)


class TaskAccessError(Exception):
    """A refused task operation; ``status`` is the HTTP status (403 or 404), ``detail`` for the audit log."""

    def __init__(self, status: int, detail: str, dataset: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.dataset = dataset


def task_json(task: TaskRecord, proposals: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A task as JSON (times ISO 8601), with its jobs and pending review proposals."""
    out = asdict(task)
    out["proposals"] = list(proposals)
    return out


class TaskAccess:
    """The tasks API's operations for one caller at a time (blocking: run them in a thread)."""

    def __init__(self, service: TaskService, directory: DatasetDirectory, engine: Engine,
                 study_of_series: Callable[[str], str | None]) -> None:
        self.service = service
        self.study_of_series = study_of_series
        self.directory = directory
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _rights(self, who: Identity, dataset: str | None) -> set[str]:
        return set(self.directory.rights(who.groups).get(dataset, ())) if dataset else set()

    def _visible(self, who: Identity, task_id: str) -> TaskRecord:
        try:
            task = self.service.task(task_id)
        except TaskNotFoundError:
            raise TaskAccessError(404, "no such task") from None
        if task.owner != who.name and Right.READ.value not in self._rights(who, task.dataset):
            raise TaskAccessError(404, "task in a dataset the caller may not read", task.dataset)
        return task

    def list(self, who: Identity, limit: int = 100) -> list[dict[str, Any]]:
        readable = sorted(d for d, r in self.directory.rights(who.groups).items() if Right.READ.value in r)
        found = {t.id: t for d in readable for t in self.service.list_tasks(dataset=d, limit=limit)}
        found.update({t.id: t for t in self.service.list_tasks(owner=who.name, limit=limit)})
        tasks = sorted(found.values(), key=lambda t: (t.created_at, t.id), reverse=True)[:limit]
        return [task_json(t) for t in tasks]

    def show(self, who: Identity, task_id: str) -> dict[str, Any]:
        task = self._visible(who, task_id)
        return task_json(task, self._proposals(task))

    def submit(self, who: Identity, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        pipeline_id, dataset = str(body.get("pipeline", "")), body.get("dataset")
        parameters = dict(body.get("parameters") or {})
        studies = [str(s) for s in body.get("studies") or ()]
        if not isinstance(dataset, str) or Right.WRITE.value not in self._rights(who, dataset):
            raise TaskAccessError(403, "submit needs write on the dataset", dataset if isinstance(dataset, str) else None)
        pipeline = self.service.pipeline(pipeline_id)
        named = studies + [str(parameters[p.name]) for p in pipeline.parameters
                           if p.type is ParameterType.STUDY_UID and p.name in parameters]
        for param in pipeline.parameters:
            if param.type is ParameterType.SERIES_UID and param.name in parameters:
                study = self.study_of_series(str(parameters[param.name]))
                if study is None:
                    raise TaskAccessError(403, "a series of the run is in no study of the dataset", dataset)
                named.append(study)
        members = self.directory.datasets_of(named)
        if any(members.get(uid) != dataset for uid in named):
            raise TaskAccessError(403, "a study of the run is not in the dataset", dataset)
        targets = [RunTarget(uid) for uid in studies]
        tasks = self.service.submit(pipeline_id, parameters, owner=who.name, targets=targets, dataset=dataset)
        return [task_json(t) for t in tasks]

    def cancel(self, who: Identity, task_id: str, reason: str | None) -> dict[str, Any]:
        task = self._visible(who, task_id)
        if task.owner != who.name and not who.admin:
            raise TaskAccessError(403, "only the owner or an admin cancels a task", task.dataset)
        return task_json(self.service.cancel(task_id, actor=who.name, reason=reason))

    def decide(self, who: Identity, job_id: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        """Decide or propose; returns (HTTP status, answer, dataset)."""
        try:
            job = self.service.store.get_job(job_id)
        except TaskNotFoundError:
            raise TaskAccessError(404, "no such job") from None
        task = self._visible(who, job.task_id)
        rights = self._rights(who, task.dataset)
        decision, reason = str(body.get("decision", "")), body.get("reason")
        outputs = dict(body.get("outputs") or {})
        if Right.FINALISE.value in rights:
            decided = self.service.decide(job_id, decision, actor=who.name, reason=reason, outputs=outputs)
            settle_job(self._sessions, job_id, who.name)
            return 200, asdict(decided), task.dataset
        if Right.REVIEW.value in rights:
            return 202, self._propose(who, job, decision, reason, outputs), task.dataset
        raise TaskAccessError(403, "deciding needs review or finalise on the dataset", task.dataset)

    def _propose(self, who: Identity, job: JobRecord, decision: str, reason: Any,
                 outputs: dict[str, Any]) -> dict[str, Any]:
        from medimg_hub.pipeline.states import DECISIONS, JobStatus

        if job.kind != "manual" or job.status is not JobStatus.WAITING_REVIEW or decision not in DECISIONS:
            raise ValueError(f"job {job.id} cannot take a proposal {decision!r} (kind {job.kind}, status {job.status})")
        row = ReviewProposal(job_id=job.id, task_id=job.task_id, actor=who.name, decision=decision,
                             reason=str(reason) if reason is not None else None, outputs=outputs, at=utcnow())
        with self._sessions.begin() as session:
            session.add(row)
            with_labels = attach_draft(session, row)
        return {"job_id": job.id, "proposal": decision, "proposed_by": who.name, "status": job.status.value,
                "with_labels": with_labels}

    def _proposals(self, task: TaskRecord) -> list[dict[str, Any]]:
        with self._sessions() as session:
            rows = session.scalars(select(ReviewProposal).where(ReviewProposal.task_id == task.id)
                                   .order_by(ReviewProposal.id))
            return [{"job_id": r.job_id, "actor": r.actor, "decision": r.decision, "reason": r.reason,
                     "at": r.at.isoformat()} for r in rows]
