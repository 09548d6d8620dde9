"""Database models of the platform API: datasets, their studies and grants, the audit log.

They live on the task store's declarative ``Base`` (one metadata, one migration chain,
revision ``0002``), so tasks, datasets and audit rows share the platform database.

Tables
------
``datasets``
    A named set of studies (DESIGN.md §4), with the InstitutionName its studies join by.
``dataset_studies``
    Membership, keyed by StudyInstanceUID (unique: a study is in at most one dataset).
``dataset_grants``
    (dataset, hub group, right) with right in ``read | write | review | finalise | export``.
``dataset_rules``
    Saved queries whose matching studies belong to a dataset (revision 0004).
``audit_events``
    Append-only: one row per access, allowed or denied. UIDs only, never patient
    attributes or pixel data. Triggers (revision 0002) refuse UPDATE and DELETE.
``review_proposals``
    A decision proposed by someone holding ``review`` but not ``finalise`` on a manual job, with
    the proposer's edited labels (revision 0003) for the finaliser to start from.
``review_claims``
    Who is working on a manual job, until when (revision 0003).
``review_drafts``
    A reviewer's unsaved edits of a manual job (opaque compressed labels, revision 0003).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, deferred, mapped_column

from medimg_hub.db import Base, UTCDateTime


class Right(StrEnum):
    """What a grant allows on a dataset's studies."""

    READ = "read"
    WRITE = "write"
    REVIEW = "review"
    FINALISE = "finalise"
    #: Take the dataset's studies out of the platform (de-identified export).
    EXPORT = "export"


class Outcome(StrEnum):
    """How an audited request ended."""

    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"


_RIGHTS = ", ".join(f"'{r.value}'" for r in Right)
_OUTCOMES = ", ".join(f"'{o.value}'" for o in Outcome)


class Dataset(Base):
    """A named set of studies."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    institution: Mapped[str | None] = mapped_column(String(64), index=True)


class DatasetStudy(Base):
    """One study's membership of one dataset."""

    __tablename__ = "dataset_studies"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name", ondelete="CASCADE"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Grant(Base):
    """A right on a dataset given to a hub group."""

    __tablename__ = "dataset_grants"
    __table_args__ = (
        UniqueConstraint("dataset", "group_name", "right"),
        CheckConstraint(f"\"right\" IN ({_RIGHTS})", name="right"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name", ondelete="CASCADE"), index=True)
    group_name: Mapped[str] = mapped_column(String(128), index=True)
    right: Mapped[str] = mapped_column(String(16))


class DatasetRule(Base):
    """A saved query: studies of the PACS that match it belong to the dataset."""

    __tablename__ = "dataset_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name", ondelete="CASCADE"), index=True)
    #: QIDO-RS filters, ``{attribute keyword: value}`` (wildcards, ranges as in QIDO-RS).
    query: Mapped[dict[str, str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One audited access (append-only)."""

    __tablename__ = "audit_events"
    __table_args__ = (CheckConstraint(f"outcome IN ({_OUTCOMES})", name="outcome"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user_name: Mapped[str | None] = mapped_column(String(128), index=True)
    groups: Mapped[list[str]] = mapped_column(JSON)
    action: Mapped[str] = mapped_column(String(32), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(128), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)


class ReviewProposal(Base):
    """A reviewer's proposed decision on a manual job, awaiting someone with ``finalise``."""

    __tablename__ = "review_proposals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The proposer's edited labels (the draft at proposal time, as the dashboard encoded it).
    mask: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))


class ReviewClaim(Base):
    """A reviewer's claim on a manual job, so that two reviewers don't work on it unknowingly."""

    __tablename__ = "review_claims"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    actor: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReviewDraft(Base):
    """One reviewer's unsaved edits of one manual job; the platform keeps them across reloads."""

    __tablename__ = "review_drafts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    actor: Mapped[str] = mapped_column(String(128), primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
