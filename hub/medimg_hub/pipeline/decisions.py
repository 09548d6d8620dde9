"""Review rows that change with a decision: claims and drafts are settled when a manual job is decided.

Part of the pipeline (deciding a manual stage is a pipeline transition); the review API
(:mod:`medimg_hub.review.access`) reads and writes the same rows for claims and drafts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import sessionmaker

from medimg_hub.access.models import ReviewClaim, ReviewDraft, ReviewProposal


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
