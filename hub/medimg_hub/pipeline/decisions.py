"""Rows that change with a decision: claims and drafts are settled when a manual job is decided,
and a final decision's deliveries (pushes to hospital PACS, the webhook) join its transaction.

Part of the pipeline (deciding a manual stage is a pipeline transition); the review API
(:mod:`medimg_hub.review.access`) reads and writes the same rows for claims and drafts, the delivery
worker (:mod:`medimg_hub.delivery`) sends the deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from medimg_hub.access.models import ReviewClaim, ReviewDraft, ReviewProposal
from medimg_hub.delivery.outbox import FinalDecision, InstanceRef, enqueue
from medimg_hub.pipeline.models import Job
from medimg_hub.settings import Settings


def settle_job(engine_sessions: sessionmaker[Any], job_id: str, actor: str) -> None:
    """Forget the claims of a job that was finalised, and the finaliser's draft (now in the PACS).

    Other reviewers' drafts stay: whoever was editing meanwhile keeps their work.
    """
    with engine_sessions.begin() as session:
        session.execute(delete(ReviewClaim).where(ReviewClaim.job_id == job_id))
        session.execute(delete(ReviewDraft).where(ReviewDraft.job_id == job_id, ReviewDraft.actor == actor))


def attach_draft(session: Any, proposal: ReviewProposal) -> bool:
    """Copy the proposer's draft into their proposal, drop the draft and their claim.

    Returns whether there was a draft (the proposal carries labels).
    """
    draft = session.get(ReviewDraft, (proposal.job_id, proposal.actor))
    proposal.mask = draft.payload if draft is not None else None
    if draft is not None:
        session.delete(draft)
    session.execute(delete(ReviewClaim).where(ReviewClaim.job_id == proposal.job_id,
                                              ReviewClaim.actor == proposal.actor))
    return draft is not None


def final_decision(job: Job) -> FinalDecision:
    """What ``job``'s decision announces: its outputs (the stored SEG and SR), the model of the stages
    it reviewed, the task's pipeline and study. Read inside the decision's transaction."""
    task = job.task
    upstream: dict[str, Any] = {}
    for other in task.jobs:
        if other.stage_id in job.depends_on:
            upstream.update(other.outputs or {})
    outputs = dict(job.outputs or {})
    seg = [str(u) for u in outputs.get("seg_sop_instance_uids") or ()]
    sr = [str(u) for u in outputs.get("sr_sop_instance_uids") or ()]
    series = [str(u) for u in outputs.get("series_instance_uids") or ()]
    # the review dashboard stores one SEG and one SR and records their series in that order
    paired = series if len(series) == len(seg) + len(sr) else [None] * (len(seg) + len(sr))
    refs = [InstanceRef(role, uid, paired[i]) for i, (role, uid) in
            enumerate([("seg", u) for u in seg] + [("sr", u) for u in sr])]
    parameters = {**(task.parameters or {}), **(job.parameters or {})}
    study = task.study_instance_uid or parameters.get("study_instance_uid")
    return FinalDecision(
        job_id=job.id, task_id=task.id, dataset=task.dataset, decision=job.status, decided_by=job.decided_by or "",
        decided_at=job.updated_at, pipeline_id=task.pipeline_id, pipeline_version=task.pipeline_version,
        study_instance_uid=str(study) if study else None, model_name=upstream.get("model_name"),
        model_version=upstream.get("model_version"), instances=tuple(refs))


def deliveries_hook(settings: Settings) -> Callable[[Session, Job, datetime], None]:
    """The ``on_decided`` callback of :meth:`~medimg_hub.pipeline.store.TaskStore.decide` that enqueues a
    final decision's deliveries (per its dataset's ``export_to`` and ``webhook``) in its transaction."""

    def enqueue_deliveries(session: Session, job: Job, now: datetime) -> None:
        enqueue(session, settings, final_decision(job), now)

    return enqueue_deliveries
