"""The audit log: one append-only row per access to images or tasks, allowed or denied.

Rows hold who (hub user and groups), what (action, study/series/SOP Instance UIDs, dataset),
how it ended (allowed / denied / error and the HTTP status), when (UTC) and the request id.
Never patient attributes (PatientName, PatientID, ...) and never pixel data: the record type
has no field for them. The database refuses UPDATE and DELETE (triggers of revision 0002);
this module offers no way to change a row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from medimg_hub.access.models import AuditEvent, Outcome
from medimg_hub.db import utcnow

log = logging.getLogger(__name__)

#: Longest free-text detail kept (characters); details are written by this package, never copied from requests.
MAX_DETAIL = 200


@dataclass(frozen=True)
class AuditRecord:
    """One audited access, as written and as read back."""

    user: str | None
    groups: tuple[str, ...]
    action: str
    outcome: Outcome
    status: int
    request_id: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    dataset: str | None = None
    detail: str | None = None
    at: datetime = field(default_factory=utcnow)
    id: int | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (time as ISO 8601 UTC)."""
        out = asdict(self)
        out["at"] = self.at.isoformat()
        out["outcome"] = self.outcome.value
        out["groups"] = list(self.groups)
        return out

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditRecord:
        return cls(user=row.user_name, groups=tuple(row.groups), action=row.action, outcome=Outcome(row.outcome),
                   status=row.status, request_id=row.request_id, study_instance_uid=row.study_instance_uid,
                   series_instance_uid=row.series_instance_uid, sop_instance_uid=row.sop_instance_uid,
                   dataset=row.dataset, detail=row.detail, at=row.at, id=row.id)


def audit_row(record: AuditRecord) -> AuditEvent:
    """The table row of ``record``, for a caller that writes it in its own transaction (with the change
    it records, so that the change and its audit row are committed together or not at all)."""
    return AuditEvent(
        at=record.at, user_name=record.user, groups=sorted(record.groups), action=record.action,
        study_instance_uid=record.study_instance_uid, series_instance_uid=record.series_instance_uid,
        sop_instance_uid=record.sop_instance_uid, dataset=record.dataset, outcome=record.outcome.value,
        status=record.status, request_id=record.request_id,
        detail=record.detail[:MAX_DETAIL] if record.detail else None,
    )


class AuditLog:
    """Append audit records to the platform database and read them back.

    Parameters
    ----------
    engine
        The platform database (migrated to revision 0002 or later).
    """

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = threading.Lock()  # one writer at a time: SQLite serialises them anyway

    def append(self, record: AuditRecord) -> None:
        """Write one record (committed when this returns)."""
        with self._lock, self._sessions.begin() as session:
            session.add(audit_row(record))

    def query(self, *, user: str | None = None, action: str | None = None, outcome: str | None = None,
              study_instance_uid: str | None = None, dataset: str | None = None, since: datetime | None = None,
              limit: int = 100, offset: int = 0) -> Sequence[AuditRecord]:
        """Records matching every filter given, newest first."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
        for column, value in ((AuditEvent.user_name, user), (AuditEvent.action, action),
                              (AuditEvent.outcome, outcome), (AuditEvent.study_instance_uid, study_instance_uid),
                              (AuditEvent.dataset, dataset)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        with self._sessions() as session:
            return [AuditRecord.from_row(row) for row in session.scalars(query)]
