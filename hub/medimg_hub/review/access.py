"""Who may do what in clinician review: the worklist, claims, drafts and review statistics.

Rules (dataset rights come from the ``[[datasets]]`` grants of the caller's groups):

* **worklist**: manual jobs ``waiting_review`` in datasets where the caller holds ``review`` or
  ``finalise``, with what a reviewer needs to pick one (pipeline, model version, claim,
  proposals). Nothing else is listed; no patient attributes are returned.
* **claim / release**: ``review`` or ``finalise`` on the job's dataset and the job waiting. A
  claim held by someone else is refused (409, naming who and until when) unless the caller
  takes it over explicitly (``force``), which the audit log records.
* **drafts**: each reviewer keeps one draft per job (opaque bytes the dashboard encodes),
  writable by that reviewer only while the job waits, readable by them also after (work is never lost).
* **proposal labels**: the labels a resident proposed, readable by anyone who may review the job.
* **statistics**: decided manual jobs of the datasets the caller may read or review; directors
  and hub admins see every dataset. Rows carry no UIDs.

A job the caller may not see is "not found" (404), exactly like one that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import sessionmaker, undefer

from medimg_hub.access.datasets import DatasetDirectory
from medimg_hub.access.identities import Identity
from medimg_hub.access.models import ReviewClaim, ReviewDraft, ReviewProposal, Right
from medimg_hub.db import utcnow
from medimg_hub.errors import TaskNotFoundError
from medimg_hub.hubconf.roles import DIRECTORS
from medimg_hub.pipeline.access import TaskAccessError
from medimg_hub.pipeline.models import JobRecord, TaskRecord
from medimg_hub.pipeline.service import TaskService
from medimg_hub.pipeline.states import DECISIONS, JobStatus
from medimg_hub.settings import ReviewSettings

log = logging.getLogger(__name__)

_REVIEWERS = (Right.REVIEW.value, Right.FINALISE.value)


class ClaimConflict(Exception):
    """Another reviewer holds the claim; ``claim`` is that claim as JSON."""

    def __init__(self, claim: dict[str, Any]) -> None:
        super().__init__(f"claimed by {claim['actor']} until {claim['expires_at']}")
        self.claim = claim


def _claim_json(claim: ReviewClaim | None) -> dict[str, Any] | None:
    if claim is None:
        return None
    return {"actor": claim.actor, "claimed_at": claim.claimed_at.isoformat(),
            "expires_at": claim.expires_at.isoformat()}


def model_outputs(task: TaskRecord, job: JobRecord) -> dict[str, Any]:
    """What the stages a manual job depends on produced (model SEG and SR, model name and version)."""
    merged: dict[str, Any] = {}
    for upstream in task.jobs:
        if upstream.stage_id in job.depends_on:
            merged.update(upstream.outputs)
    return merged


class ReviewAccess:
    """The review endpoints' operations for one caller at a time (blocking: run them in a thread)."""

    def __init__(self, service: TaskService, directory: DatasetDirectory, engine: Engine,
                 settings: ReviewSettings) -> None:
        self.service = service
        self.directory = directory
        self.settings = settings
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # --- visibility ------------------------------------------------------------------------------

    def _reviewable(self, who: Identity) -> list[str]:
        return sorted(d for d, rights in self.directory.rights(who.groups).items()
                      if any(r in rights for r in _REVIEWERS))

    def _job(self, who: Identity, job_id: str, *, waiting: bool = True) -> tuple[JobRecord, TaskRecord]:
        """The job and its task if the caller may review it (404 otherwise; 409 if no longer waiting)."""
        try:
            job = self.service.store.get_job(job_id)
            task = self.service.task(job.task_id)
        except TaskNotFoundError:
            raise TaskAccessError(404, "no such job") from None
        if job.kind != "manual" or task.dataset not in self._reviewable(who):
            raise TaskAccessError(404, "a job the caller may not review", task.dataset)
        if waiting and job.status is not JobStatus.WAITING_REVIEW:
            raise TaskAccessError(409, f"job is {job.status.value}, no longer waiting for review", task.dataset)
        return job, task

    # --- the worklist ------------------------------------------------------------------------------

    def worklist(self, who: Identity) -> list[dict[str, Any]]:
        """Jobs waiting for review in the caller's datasets, oldest first."""
        items = []
        rights = self.directory.rights(who.groups)
        for dataset in self._reviewable(who):
            for job in self.service.store.list_jobs(status=JobStatus.WAITING_REVIEW, kind="manual",
                                                    dataset=dataset, limit=1000):
                task = self.service.task(job.task_id)
                items.append(self._item(job, task, Right.FINALISE.value in rights.get(dataset, ())))
        return sorted(items, key=lambda i: (i["waiting_since"], i["job_id"]))

    def _item(self, job: JobRecord, task: TaskRecord, can_finalise: bool) -> dict[str, Any]:
        produced = model_outputs(task, job)
        with self._sessions() as session:
            claim = self._live_claim(session, job.id)
            proposals = session.scalars(select(ReviewProposal).where(ReviewProposal.job_id == job.id)
                                        .order_by(ReviewProposal.id).options(undefer(ReviewProposal.mask))).all()
            proposal_rows = [{"id": p.id, "actor": p.actor, "decision": p.decision, "reason": p.reason,
                              "at": p.at.isoformat(), "has_mask": p.mask is not None} for p in proposals]
        parameters = {**task.parameters, **job.parameters}
        return {
            "job_id": job.id, "task_id": task.id, "stage_id": job.stage_id, "dataset": task.dataset,
            "pipeline_id": task.pipeline_id, "pipeline_version": task.pipeline_version,
            "study_instance_uid": parameters.get("study_instance_uid") or task.study_instance_uid,
            "series_instance_uid": parameters.get("series_instance_uid") or task.series_instance_uid,
            "waiting_since": (job.eligible_at or job.updated_at).isoformat(),
            "model_name": produced.get("model_name"), "model_version": produced.get("model_version"),
            "model_seg_sop_instance_uids": list(produced.get("seg_sop_instance_uids") or ()),
            "model_sr_sop_instance_uids": list(produced.get("sr_sop_instance_uids") or ()),
            "claim": _claim_json(claim), "proposals": proposal_rows, "can_finalise": can_finalise,
        }

    def item(self, who: Identity, job_id: str) -> dict[str, Any]:
        """One worklist item (any status), e.g. to check before saving that it still waits."""
        job, task = self._job(who, job_id, waiting=False)
        rights = self.directory.rights(who.groups).get(task.dataset or "", ())
        return {**self._item(job, task, Right.FINALISE.value in rights), "status": job.status.value,
                "decided_by": job.decided_by}

    # --- claims ----------------------------------------------------------------------------------

    def _live_claim(self, session: Any, job_id: str) -> ReviewClaim | None:
        claim = session.get(ReviewClaim, job_id)
        return claim if claim is not None and claim.expires_at > utcnow() else None

    def claim(self, who: Identity, job_id: str, force: bool = False) -> tuple[dict[str, Any], str | None]:
        """Claim (or renew the caller's claim on) a job; returns (claim, dataset)."""
        _, task = self._job(who, job_id)
        now = utcnow()
        with self._sessions.begin() as session:
            current = self._live_claim(session, job_id)
            if current is not None and current.actor != who.name and not force:
                raise ClaimConflict(_claim_json(current) or {})
            session.execute(delete(ReviewClaim).where(ReviewClaim.job_id == job_id))
            claim = ReviewClaim(job_id=job_id, actor=who.name, claimed_at=now,
                                expires_at=now + timedelta(seconds=self.settings.claim_ttl_s))
            session.add(claim)
        return _claim_json(claim) or {}, task.dataset

    def release(self, who: Identity, job_id: str) -> str | None:
        """Drop the caller's claim (admins: anyone's); returns the dataset."""
        _, task = self._job(who, job_id, waiting=False)
        with self._sessions.begin() as session:
            query = delete(ReviewClaim).where(ReviewClaim.job_id == job_id)
            if not who.admin:
                query = query.where(ReviewClaim.actor == who.name)
            session.execute(query)
        return task.dataset

    # --- drafts ----------------------------------------------------------------------------------

    def get_draft(self, who: Identity, job_id: str) -> tuple[bytes, str, str | None]:
        """The caller's draft of a job (also once decided): (payload, updated_at ISO, dataset); 404 if none."""
        _, task = self._job(who, job_id, waiting=False)
        with self._sessions() as session:
            draft = session.get(ReviewDraft, (job_id, who.name))
            if draft is None:
                raise TaskAccessError(404, "no draft", task.dataset)
            return draft.payload, draft.updated_at.isoformat(), task.dataset

    def put_draft(self, who: Identity, job_id: str, payload: bytes) -> tuple[str, str | None]:
        """Keep ``payload`` as the caller's draft of a waiting job; returns (updated_at ISO, dataset)."""
        _, task = self._job(who, job_id)
        if not payload:
            raise TaskAccessError(400, "empty draft", task.dataset)
        if len(payload) > self.settings.max_draft_bytes:
            raise TaskAccessError(413, f"draft of {len(payload)} bytes over [review] max_draft_bytes", task.dataset)
        now = utcnow()
        with self._sessions.begin() as session:
            draft = session.get(ReviewDraft, (job_id, who.name))
            if draft is None:
                session.add(ReviewDraft(job_id=job_id, actor=who.name, payload=payload, updated_at=now))
            else:
                draft.payload, draft.updated_at = payload, now
        return now.isoformat(), task.dataset

    def delete_draft(self, who: Identity, job_id: str) -> str | None:
        _, task = self._job(who, job_id, waiting=False)
        with self._sessions.begin() as session:
            session.execute(delete(ReviewDraft).where(ReviewDraft.job_id == job_id, ReviewDraft.actor == who.name))
        return task.dataset

    def proposal_mask(self, who: Identity, job_id: str, proposal_id: int) -> tuple[bytes, str | None]:
        """The labels a proposal carried (404 when it carried none)."""
        _, task = self._job(who, job_id, waiting=False)
        with self._sessions() as session:
            row = session.scalars(select(ReviewProposal).where(ReviewProposal.id == proposal_id,
                                                               ReviewProposal.job_id == job_id)
                                  .options(undefer(ReviewProposal.mask))).first()
            if row is None or row.mask is None:
                raise TaskAccessError(404, "no such proposal labels", task.dataset)
            return row.mask, task.dataset

    # --- statistics --------------------------------------------------------------------------------

    def statistics(self, who: Identity) -> list[dict[str, Any]]:
        """Decided review jobs, one row each, without UIDs (for the director dashboard)."""
        rights = self.directory.rights(who.groups)
        if who.admin or DIRECTORS in who.groups:
            datasets: Iterable[str] = sorted(self.directory.names())
        else:
            datasets = sorted(d for d, r in rights.items() if r)
        rows = []
        for dataset in datasets:
            for status in DECISIONS:
                for job in self.service.store.list_jobs(status=status, kind="manual", dataset=dataset, limit=100_000):
                    task = self.service.task(job.task_id)
                    produced = model_outputs(task, job)
                    rows.append({
                        "dataset": dataset, "pipeline_id": task.pipeline_id, "decision": job.status.value,
                        "decided_by": job.decided_by, "model_name": produced.get("model_name"),
                        "model_version": produced.get("model_version"),
                        "waiting_since": (job.eligible_at or job.created_at).isoformat(),
                        "decided_at": (job.finished_at or job.updated_at).isoformat(),
                        "review_time_s": job.outputs.get("review_time_s"),
                        "dice": job.outputs.get("dice"), "dice_mean": job.outputs.get("dice_mean"),
                    })
        return sorted(rows, key=lambda r: r["decided_at"])

