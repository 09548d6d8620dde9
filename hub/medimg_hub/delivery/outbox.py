"""The outbox: deliveries written with the decision, then claimed, sent and settled by workers.

* :func:`enqueue` runs **inside the transaction that records a final decision**
  (:meth:`medimg_hub.pipeline.store.TaskStore.decide`): one row per ``export_to`` destination of
  the dataset (when the decision stored a SEG or SR) and one for its webhook. The decision and its
  deliveries are committed together, or neither is.
* :meth:`Outbox.claim` gives a worker the rows that are due, each under a lease: a conditional
  UPDATE that only one worker can win, so two workers never send one row at once; a worker that
  dies loses its lease after ``[deliveries] lease_s`` and the row is sent again (receivers
  de-duplicate by the idempotency key; a PACS stores the same SOP Instance UID once).
* A webhook row waits until the same decision's PACS pushes are settled (delivered or failed), so
  the announcement follows the results; it then says where they went.
* :meth:`Outbox.succeed` / :meth:`Outbox.fail` settle an attempt, with the next attempt after an
  exponential backoff with jitter (:func:`backoff_s`), ``failed`` after ``max_attempts``;
  :meth:`Outbox.retry` sends a failed row again. Every outcome writes an audit row in the same
  transaction.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from medimg_kernel.errors import ConfigurationError, MedImgError

from medimg_hub.access.audit import AuditRecord, audit_row
from medimg_hub.access.models import Outcome
from medimg_hub.db import utcnow
from medimg_hub.delivery.models import Delivery, DeliveryKind, DeliveryStatus
from medimg_hub.settings import Settings
from medimg_hub.settings.destinations import RetrySettings

#: Namespace of the idempotency keys (UUID5 of "<job id>/<kind of table>/<name>").
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d1f6f0e-8a5b-4c1e-9a57-0c7e2b3f9d41")
#: The audit log's user for what the delivery worker does.
WORKER_ACTOR = "delivery-worker"
#: The event a webhook announces.
EVENT_FINALISED = "review.finalised"


class DeliveryNotFoundError(MedImgError, LookupError):
    """No delivery has this id."""

    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"no delivery with id {delivery_id} (`medimg deliveries list` shows them)")


@dataclass(frozen=True)
class InstanceRef:
    """One object the decision stored in the platform PACS (``role``: ``"seg"`` or ``"sr"``)."""

    role: str
    sop_instance_uid: str
    series_instance_uid: str | None = None


@dataclass(frozen=True)
class FinalDecision:
    """What a final decision announces: UIDs, the decision, pipeline and model; no patient attributes."""

    job_id: str
    task_id: str
    dataset: str | None
    decision: str
    decided_by: str
    decided_at: datetime
    pipeline_id: str
    pipeline_version: str
    study_instance_uid: str | None
    model_name: str | None = None
    model_version: str | int | None = None
    instances: tuple[InstanceRef, ...] = ()

    def payload(self) -> dict[str, Any]:
        """As stored in the outbox row (JSON)."""
        return {
            "event": EVENT_FINALISED, "job_id": self.job_id, "task_id": self.task_id, "dataset": self.dataset,
            "decision": self.decision, "decided_by": self.decided_by, "decided_at": self.decided_at.isoformat(),
            "pipeline": {"id": self.pipeline_id, "version": self.pipeline_version},
            "model": {"name": self.model_name, "version": self.model_version},
            "study_instance_uid": self.study_instance_uid,
            "instances": [{"role": i.role, "sop_instance_uid": i.sop_instance_uid,
                           "series_instance_uid": i.series_instance_uid} for i in self.instances],
        }


@dataclass(frozen=True)
class DeliveryRecord:
    """A snapshot of one outbox row (see :class:`~.models.Delivery` for the fields)."""

    id: int
    idempotency_key: str
    job_id: str
    dataset: str | None
    kind: DeliveryKind
    target: str
    status: DeliveryStatus
    attempts: int
    payload: dict[str, Any] = field(repr=False)
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Delivery) -> DeliveryRecord:
        return cls(id=row.id, idempotency_key=row.idempotency_key, job_id=row.job_id, dataset=row.dataset,
                   kind=DeliveryKind(row.kind), target=row.target, status=DeliveryStatus(row.status),
                   attempts=row.attempts, payload=dict(row.payload), created_at=row.created_at,
                   updated_at=row.updated_at, next_attempt_at=row.next_attempt_at, delivered_at=row.delivered_at,
                   lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at, last_error=row.last_error)

    def as_json(self) -> dict[str, Any]:
        """For the platform API and ``--json``: times ISO 8601, the payload's UIDs included."""
        out = {k: getattr(self, k) for k in ("id", "idempotency_key", "job_id", "dataset", "target", "attempts",
                                             "last_error", "lease_owner")}
        out.update(kind=self.kind.value, status=self.status.value, payload=self.payload)
        for key in ("created_at", "updated_at", "next_attempt_at", "delivered_at", "lease_expires_at"):
            value = getattr(self, key)
            out[key] = value.isoformat() if value is not None else None
        return out


def idempotency_key(job_id: str, table: str, name: str) -> str:
    """The stable key of one decision's delivery to one target (``table``: "destinations" or "webhooks")."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{job_id}/{table}/{name}"))


def backoff_s(attempts: int, retry: RetrySettings, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based).

    ``min(max_backoff_s, backoff_s × 2^(attempts-1))`` times a jitter factor in [0.5, 1], so that
    many deliveries failing together (a PACS down) do not all come back at the same instant.
    """
    base = min(retry.max_backoff_s, retry.backoff_s * 2.0 ** min(max(attempts - 1, 0), 60))
    return base * (0.5 + 0.5 * rand())


def enqueue(session: Session, settings: Settings, decision: FinalDecision, now: datetime) -> list[Delivery]:
    """Add the deliveries of a final decision to ``session`` (the decision's own transaction).

    One row per ``export_to`` destination of the decision's dataset when the decision stored
    instances (a rejection stores none: nothing to push), and one for the dataset's webhook.
    Returns the rows added (none when the dataset exports nowhere).
    """
    dataset = next((d for d in settings.datasets if d.name == decision.dataset), None)
    if dataset is None:
        return []
    kinds = {d.name: d.kind for d in settings.destinations}
    unknown = [name for name in dataset.export_to if name not in kinds]
    if unknown:  # load_settings refuses this; settings built in code are checked here, before anything is stored
        raise ConfigurationError(f"[[datasets]] {dataset.name}: export_to names {unknown}, which are not "
                                 f"[[destinations]]; the decision was not stored")
    payload = decision.payload()
    rows: list[Delivery] = []
    targets = [(kinds[name], "destinations", name) for name in dataset.export_to if decision.instances]
    if dataset.webhook:
        targets.append((DeliveryKind.WEBHOOK.value, "webhooks", dataset.webhook))
    for kind, table, name in targets:
        row = Delivery(idempotency_key=idempotency_key(decision.job_id, table, name), job_id=decision.job_id,
                       dataset=decision.dataset, kind=kind, target=name, status=DeliveryStatus.PENDING.value,
                       payload=payload, attempts=0, created_at=now, updated_at=now, next_attempt_at=now)
        session.add(row)
        rows.append(row)
    if rows:
        session.add(audit_row(_audit(decision.decided_by, "delivery.queued", Outcome.ALLOWED, 202, rows[0],
                                     f"job {decision.job_id}: {', '.join(t[2] for t in targets)}", at=now,
                                     study=decision.study_instance_uid)))
    return rows


def _audit(actor: str, action: str, outcome: Outcome, status: int, row: Delivery, detail: str, *, at: datetime,
           study: str | None = None) -> AuditRecord:
    return AuditRecord(user=actor, groups=(), action=action, outcome=outcome, status=status,
                       request_id=row.idempotency_key, dataset=row.dataset, detail=detail, at=at,
                       study_instance_uid=study or row.payload.get("study_instance_uid"))


class Outbox:
    """The ``deliveries`` table for workers, the command line and the platform API.

    Parameters
    ----------
    engine
        The platform database, migrated to revision 0005 or later.
    clock
        Returns the current timezone-aware UTC time (injected by tests).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._clock = clock

    # --- reading ----------------------------------------------------------------------------------

    def get(self, delivery_id: int) -> DeliveryRecord:
        with self._sessions() as session:
            row = session.get(Delivery, delivery_id)
            if row is None:
                raise DeliveryNotFoundError(delivery_id)
            return DeliveryRecord.from_row(row)

    def list_deliveries(self, *, status: DeliveryStatus | str | None = None, job_id: str | None = None,
             dataset: str | None = None, limit: int = 100, offset: int = 0) -> list[DeliveryRecord]:
        """Deliveries matching every filter given, newest first."""
        query = select(Delivery).order_by(Delivery.id.desc()).limit(limit).offset(offset)
        for column, value in ((Delivery.status, status), (Delivery.job_id, job_id), (Delivery.dataset, dataset)):
            if value is not None:
                query = query.where(column == str(value))
        with self._sessions() as session:
            return [DeliveryRecord.from_row(r) for r in session.scalars(query)]

    def siblings(self, record: DeliveryRecord) -> dict[str, str]:
        """Status of each PACS push of the same decision: ``{destination: status}``."""
        query = select(Delivery).where(Delivery.job_id == record.job_id, Delivery.kind != DeliveryKind.WEBHOOK.value)
        with self._sessions() as session:
            return {r.target: r.status for r in session.scalars(query.order_by(Delivery.id))}

    # --- workers ----------------------------------------------------------------------------------

    def claim(self, owner: str, lease_s: float, limit: int = 10) -> list[DeliveryRecord]:
        """Take up to ``limit`` due deliveries for ``owner``, each leased for ``lease_s`` seconds.

        Due: pending, ``next_attempt_at`` passed, no live lease, and for a webhook no PACS push of
        the same decision still pending. Oldest first.
        """
        now = self._clock()
        other = aliased(Delivery)
        push_pending = exists().where(other.job_id == Delivery.job_id, other.kind != DeliveryKind.WEBHOOK.value,
                                      other.status == DeliveryStatus.PENDING.value)
        due = and_(Delivery.status == DeliveryStatus.PENDING.value, Delivery.next_attempt_at <= now,
                   or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now),
                   or_(Delivery.kind != DeliveryKind.WEBHOOK.value, ~push_pending))
        claimed = []
        with self._sessions.begin() as session:
            ids = list(session.scalars(select(Delivery.id).where(due).order_by(Delivery.next_attempt_at, Delivery.id)
                                       .limit(limit)))
            for delivery_id in ids:
                won = session.execute(update(Delivery).where(Delivery.id == delivery_id, due).values(
                    lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))
                    .execution_options(synchronize_session=False))
                if won.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery_id)
            rows = session.scalars(select(Delivery).where(Delivery.id.in_(claimed)).order_by(Delivery.id)
                                   .execution_options(populate_existing=True))
            return [DeliveryRecord.from_row(r) for r in rows]

    def renew(self, delivery_id: int, owner: str, lease_s: float) -> bool:
        """Extend ``owner``'s lease on a delivery it is sending by ``lease_s`` seconds from now (between the
        steps of a long attempt); False when the lease was lost (another worker took the row over)."""
        now = self._clock()
        with self._sessions.begin() as session:
            renewed = session.execute(update(Delivery).where(
                Delivery.id == delivery_id, Delivery.lease_owner == owner,
                Delivery.status == DeliveryStatus.PENDING.value).values(
                lease_expires_at=now + timedelta(seconds=lease_s)).execution_options(synchronize_session=False))
            return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]

    def succeed(self, delivery_id: int, owner: str, detail: str, status: int = 200) -> bool:
        """Record a successful attempt; False if the row was no longer pending (settled meanwhile)."""
        now = self._clock()
        with self._sessions.begin() as session:
            row = session.get(Delivery, delivery_id, with_for_update=True)
            if row is None or row.status != DeliveryStatus.PENDING.value:
                return False
            row.status, row.attempts, row.delivered_at, row.updated_at = DeliveryStatus.DELIVERED.value, \
                row.attempts + 1, now, now
            row.lease_owner = row.lease_expires_at = None
            session.add(audit_row(_audit(WORKER_ACTOR, "delivery.delivered", Outcome.ALLOWED, status, row,
                                         f"{row.kind} {row.target}: {detail}", at=now)))
            return True

    def fail(self, delivery_id: int, owner: str, error: str, retry: RetrySettings, *, status: int = 502,
             rand: Callable[[], float] = random.random) -> DeliveryRecord | None:
        """Record a failed attempt: pending again after a backoff, or ``failed`` after ``max_attempts``.

        Returns the row as now, or None when ``owner`` no longer holds its lease (another worker
        took it over; its attempt counts instead).
        """
        now = self._clock()
        with self._sessions.begin() as session:
            row = session.get(Delivery, delivery_id, with_for_update=True)
            if row is None or row.status != DeliveryStatus.PENDING.value or row.lease_owner != owner:
                return None
            row.attempts += 1
            row.last_error = error[:2000]
            row.updated_at = now
            row.lease_owner = row.lease_expires_at = None
            if row.attempts >= retry.max_attempts:
                row.status = DeliveryStatus.FAILED.value
                action, detail = "delivery.failed", f"gave up after {row.attempts} attempts"
            else:
                wait = backoff_s(row.attempts, retry, rand)
                row.next_attempt_at = now + timedelta(seconds=wait)
                action, detail = "delivery.attempt", f"attempt {row.attempts} failed, next in {wait:.1f} s"
            session.add(audit_row(_audit(WORKER_ACTOR, action, Outcome.ERROR, status, row,
                                         f"{row.kind} {row.target}: {detail}: {error}", at=now)))
            session.flush()
            return DeliveryRecord.from_row(row)

    # --- people -----------------------------------------------------------------------------------

    def retry(self, delivery_id: int, actor: str) -> DeliveryRecord:
        """Send a failed (or waiting) delivery again now, with a fresh count of attempts.

        Raises
        ------
        DeliveryNotFoundError
            No such delivery.
        """
        now = self._clock()
        with self._sessions.begin() as session:
            row = session.get(Delivery, delivery_id, with_for_update=True)
            if row is None:
                raise DeliveryNotFoundError(delivery_id)
            if row.status != DeliveryStatus.DELIVERED.value:
                previous = row.status
                row.status, row.attempts, row.next_attempt_at, row.updated_at = \
                    DeliveryStatus.PENDING.value, 0, now, now
                session.add(audit_row(_audit(actor, "delivery.retry", Outcome.ALLOWED, 200, row,
                                             f"{row.kind} {row.target}: was {previous}", at=now)))
            session.flush()
            return DeliveryRecord.from_row(row)


def instances_of(payload: dict[str, Any]) -> Sequence[InstanceRef]:
    """The instances a payload names."""
    return [InstanceRef(i["role"], i["sop_instance_uid"], i.get("series_instance_uid"))
            for i in payload.get("instances", ())]


__all__ = ["EVENT_FINALISED", "DeliveryNotFoundError", "DeliveryRecord", "FinalDecision", "InstanceRef", "Outbox",
           "backoff_s", "enqueue", "idempotency_key", "instances_of"]
