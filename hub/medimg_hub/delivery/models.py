"""The outbox table: one row per result that must leave the platform (revision 0005).

``deliveries``
    One row per finalised decision and target: a ``[[destinations]]`` PACS the reviewed SEG and SR
    are pushed to (``kind`` ``dicomweb`` or ``dicom``), or a ``[[webhooks]]`` URL the decision is
    announced to (``kind`` ``webhook``). Written in the transaction that records the decision, so a
    decision never exists without its deliveries. ``payload`` holds what is sent (UIDs, the
    decision, pipeline and model; never patient attributes). ``lease_owner``/``lease_expires_at``:
    the worker sending it now, so two workers never send one row at once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from medimg_hub.db import Base, UTCDateTime


class DeliveryStatus(StrEnum):
    """Where a delivery stands: ``pending`` (due now or after its backoff, or being sent),
    ``delivered``, or ``failed`` (gave up after ``max_attempts``; ``medimg deliveries retry`` resends)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryKind(StrEnum):
    """What kind of target: a DICOMweb PACS (STOW-RS), a DICOM node (C-STORE), or a webhook."""

    DICOMWEB = "dicomweb"
    DICOM = "dicom"
    WEBHOOK = "webhook"


_STATUSES = ", ".join(f"'{s.value}'" for s in DeliveryStatus)
_KINDS = ", ".join(f"'{k.value}'" for k in DeliveryKind)


class Delivery(Base):
    """One result on its way to one target (the outbox row)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        CheckConstraint(f"kind IN ({_KINDS})", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Stable per (job, target): a UUID5, sent as ``Idempotency-Key`` on every attempt.
    idempotency_key: Mapped[str] = mapped_column(String(36), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    dataset: Mapped[str | None] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: The ``[[destinations]]`` or ``[[webhooks]]`` name.
    target: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Not sent before this time (the backoff after a failure).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What went wrong the last time (kept after success too, for the record).
    last_error: Mapped[str | None] = mapped_column(Text)
