"""Datasets administered: create, rename, studies in and out, saved query rules, grants.

Every change is one database transaction together with its audit row (action
``dataset.admin``, the admin's name, a detail saying what changed): either all of it
happens or none. Changes take effect without a restart: the gateway and the MLflow proxy
read datasets and grants from the database (with a few seconds' cache, cleared at once
in the process that made the change, through ``on_change``).

Refusals (:class:`DatasetAdminError` and its kinds) say what is wrong and change nothing:
an unknown dataset or rule (:class:`DatasetNotFound`), a name taken, a study that would leave
a dataset while a review of it is open there (:class:`DatasetConflict`), a grant to a group
the hub does not have, a malformed name, right or query (:class:`DatasetAdminError`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from medimg_kernel import qido
from medimg_kernel.errors import MedImgError
from medimg_kernel.qido import QueryError

from medimg_hub.access.models import AuditEvent, Dataset, DatasetRule, DatasetStudy, Grant, Outcome, Right
from medimg_hub.db import utcnow
from medimg_hub.pipeline.models import Job, Task
from medimg_hub.pipeline.states import JobStatus

log = logging.getLogger(__name__)

#: A dataset's name: what URLs, experiment names and settings tables use.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Audit action of every change.
AUDIT_ACTION = "dataset.admin"
#: Job states in which a study's review is open (not yet decided).
OPEN_REVIEW = (JobStatus.WAITING_REVIEW.value,)
#: Studies listed by name in a refusal (the rest are counted).
SHOWN_STUDIES = 3


class DatasetAdminError(MedImgError, ValueError):
    """A change refused as malformed or impossible; nothing was changed. ``status``: its HTTP answer."""

    status = 400


class DatasetNotFound(DatasetAdminError, LookupError):
    """No dataset (or rule) of that name (id)."""

    status = 404


class DatasetConflict(DatasetAdminError):
    """The change collides with the platform's state (a name taken, an open review)."""

    status = 409


class PacsUnanswered(DatasetAdminError):
    """The PACS did not answer a rule's query or the unassigned studies' listing."""

    status = 502


@dataclass(frozen=True)
class DatasetView:
    """One dataset as administrators see it."""

    name: str
    description: str
    institution: str | None
    studies: int
    #: Hub groups by right, e.g. ``{"read": ["engineers"], ...}`` (every right present).
    grants: dict[str, list[str]]
    #: ``{"id", "query", "created_by", "created_at"}`` of each saved rule.
    rules: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "institution": self.institution,
                "studies": self.studies, "grants": self.grants, "rules": self.rules}


@dataclass(frozen=True)
class Membership:
    """What adding studies did: studies new to any dataset, moved from another one, already here."""

    added: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()
    already: tuple[str, ...] = ()

    def as_json(self) -> dict[str, int]:
        return {"added": len(self.added), "moved": len(self.moved), "already": len(self.already)}


def check_name(name: str) -> str:
    """``name`` if it can name a dataset, else :class:`DatasetAdminError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DatasetAdminError(f"dataset name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with "
                                "a letter or digit")
    return name


def check_right(right: str) -> Right:
    """The :class:`Right` named ``right``, else :class:`DatasetAdminError` listing the rights."""
    try:
        return Right(right)
    except ValueError:
        raise DatasetAdminError(f"right {right!r} is not one of {', '.join(r.value for r in Right)}") from None


def check_query(query: Mapping[str, Any]) -> dict[str, str]:
    """A rule's QIDO-RS filters, checked: attribute keywords or tags, no paging or field keys."""
    if not isinstance(query, Mapping) or not query:
        raise DatasetAdminError("a rule needs at least one ATTRIBUTE=VALUE filter")
    filters = {str(k): str(v) for k, v in query.items()}
    for key in filters:
        if key in qido.CONTROL_KEYS:
            raise DatasetAdminError(f"{key!r} is a QIDO-RS control parameter, not a filter")
        try:
            qido.attribute(key)
        except QueryError as exc:
            raise DatasetAdminError(str(exc)) from None
    return filters


class DatasetAdmin:
    """Administration of datasets in the platform database.

    Parameters
    ----------
    engine
        The platform database.
    group_exists
        Whether the hub has a group of that name (grants to unknown groups are refused).
    on_change
        Called after each committed change (the caller's caches).
    """

    def __init__(self, engine: Engine, *, group_exists: Callable[[str], bool],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._group_exists = group_exists
        self._on_change = on_change

    # --- reading ------------------------------------------------------------------------------------

    def list(self) -> list[DatasetView]:
        """Every dataset, by name."""
        with self._sessions() as session:
            return [self._view(session, d) for d in session.scalars(select(Dataset).order_by(Dataset.name))]

    def get(self, name: str) -> DatasetView:
        with self._sessions() as session:
            return self._view(session, self._dataset(session, name))

    def assigned(self) -> set[str]:
        """Every StudyInstanceUID that is in a dataset."""
        with self._sessions() as session:
            return set(session.scalars(select(DatasetStudy.study_instance_uid)))

    def rules(self) -> list[tuple[int, str, dict[str, str]]]:
        """(id, dataset, query) of every saved rule, oldest first."""
        with self._sessions() as session:
            return [(r.id, r.dataset, dict(r.query)) for r in session.scalars(select(DatasetRule).order_by(DatasetRule.id))]

    @staticmethod
    def _dataset(session: Session, name: str) -> Dataset:
        row = session.get(Dataset, name) if isinstance(name, str) else None
        if row is None:
            raise DatasetNotFound(f"no dataset named {name!r}")
        return row

    @staticmethod
    def _view(session: Session, dataset: Dataset) -> DatasetView:
        count = session.scalar(select(func.count()).select_from(DatasetStudy).where(DatasetStudy.dataset == dataset.name))
        grants: dict[str, list[str]] = {r.value: [] for r in Right}
        for group, right in session.execute(select(Grant.group_name, Grant.right).where(
                Grant.dataset == dataset.name).order_by(Grant.group_name)):
            grants.setdefault(right, []).append(group)
        rules = [{"id": r.id, "query": dict(r.query), "created_by": r.created_by, "created_at": r.created_at.isoformat()}
                 for r in session.scalars(select(DatasetRule).where(DatasetRule.dataset == dataset.name)
                                          .order_by(DatasetRule.id))]
        return DatasetView(dataset.name, dataset.description or "", dataset.institution, int(count or 0), grants, rules)

    # --- changing -----------------------------------------------------------------------------------

    def _commit(self, session: Session, actor: str, groups: Sequence[str], dataset: str, detail: str) -> None:
        session.add(AuditEvent(at=utcnow(), user_name=actor, groups=list(groups), action=AUDIT_ACTION,
                               dataset=dataset, outcome=Outcome.ALLOWED.value, status=200,
                               request_id=str(uuid.uuid4()), detail=detail))
        session.commit()
        log.info("dataset %s changed by %s: %s", dataset, actor, detail)
        self._on_change()

    def create(self, name: str, *, actor: str, groups: Sequence[str] = (), description: str = "",
               institution: str = "") -> DatasetView:
        """A new, empty dataset without grants."""
        check_name(name)
        with self._sessions() as session:
            if session.get(Dataset, name) is not None:
                raise DatasetConflict(f"a dataset named {name!r} exists already")
            if institution and session.scalar(select(Dataset.name).where(Dataset.institution == institution.strip())):
                raise DatasetConflict(f"InstitutionName {institution!r} already routes studies to another dataset")
            session.add(Dataset(name=name, description=description, institution=institution.strip() or None))
            session.flush()
            view = self._view(session, session.get(Dataset, name))  # type: ignore[arg-type]
            self._commit(session, actor, groups, name, "created")
        return view

    def update(self, name: str, *, actor: str, groups: Sequence[str] = (), new_name: str | None = None,
               description: str | None = None) -> DatasetView:
        """Rename a dataset (its studies, grants, rules and tasks follow) or change its description."""
        with self._sessions() as session:
            row = self._dataset(session, name)
            changes = []
            if description is not None and description != row.description:
                row.description = description
                changes.append("description changed")
            if new_name is not None and new_name != name:
                check_name(new_name)
                if session.get(Dataset, new_name) is not None:
                    raise DatasetConflict(f"a dataset named {new_name!r} exists already")
                # a primary key referenced by other tables: a new row, the references moved, the old row gone
                session.add(Dataset(name=new_name, description=row.description, institution=row.institution))
                session.flush()
                for model in (DatasetStudy, Grant, DatasetRule):
                    session.execute(update(model).where(model.dataset == name).values(dataset=new_name))
                session.execute(update(Task).where(Task.dataset == name).values(dataset=new_name))
                session.delete(row)
                session.flush()
                changes.append(f"renamed from {name!r} to {new_name!r}")
            if not changes:
                return self._view(session, row)
            final = new_name or name
            view = self._view(session, self._dataset(session, final))
            self._commit(session, actor, groups, final, "; ".join(changes))
        return view

    def _open_reviews(self, session: Session, studies: Iterable[str], dataset_of: Mapping[str, str]) -> list[str]:
        """Studies (of ``studies``) with a review still open in the dataset they are in."""
        uids = sorted(set(studies))
        if not uids:
            return []
        rows = session.execute(select(Task.study_instance_uid, Task.dataset).join(Job, Job.task_id == Task.id).where(
            Task.study_instance_uid.in_(uids), Job.status.in_(OPEN_REVIEW)))
        return sorted({uid for uid, dataset in rows if uid and dataset_of.get(uid) in (dataset, None)})

    def _place(self, session: Session, name: str, uids: Sequence[str]) -> Membership:
        """Put studies in dataset ``name`` (moving them from others), refusing if any has an open review."""
        current = dict(session.execute(select(DatasetStudy.study_instance_uid, DatasetStudy.dataset).where(
            DatasetStudy.study_instance_uid.in_(uids))).all())
        leaving = {uid: dataset for uid, dataset in current.items() if dataset != name}
        blocked = self._open_reviews(session, leaving, leaving)
        if blocked:
            shown = ", ".join(blocked[:SHOWN_STUDIES]) + (f" and {len(blocked) - SHOWN_STUDIES} more"
                                                          if len(blocked) > SHOWN_STUDIES else "")
            raise DatasetConflict(f"{len(blocked)} of these studies would leave a dataset while a review of them is "
                                  f"open there ({shown}): decide or cancel those reviews first; nothing was changed")
        now = utcnow()
        added, moved, already = [], [], []
        for uid in uids:
            if uid not in current:
                session.add(DatasetStudy(study_instance_uid=uid, dataset=name, assigned_at=now))
                added.append(uid)
            elif uid in leaving:
                session.execute(update(DatasetStudy).where(DatasetStudy.study_instance_uid == uid).values(
                    dataset=name, assigned_at=now))
                moved.append(uid)
            else:
                already.append(uid)
        return Membership(tuple(added), tuple(moved), tuple(already))

    def add_studies(self, name: str, study_uids: Iterable[str], *, actor: str,
                    groups: Sequence[str] = ()) -> Membership:
        """Put studies in a dataset; studies in another dataset move unless a review of them is open there."""
        uids = _uids(study_uids)
        with self._sessions() as session:
            self._dataset(session, name)
            result = self._place(session, name, uids)
            if result.added or result.moved:
                self._commit(session, actor, groups, name,
                             f"studies added: {len(result.added)} new, {len(result.moved)} moved from other datasets")
        return result

    def remove_studies(self, name: str, study_uids: Iterable[str], *, actor: str, groups: Sequence[str] = ()) -> int:
        """Take studies out of a dataset (they become unassigned: admins only see them); returns how many."""
        uids = _uids(study_uids)
        with self._sessions() as session:
            self._dataset(session, name)
            members = set(session.scalars(select(DatasetStudy.study_instance_uid).where(
                DatasetStudy.dataset == name, DatasetStudy.study_instance_uid.in_(uids))))
            blocked = self._open_reviews(session, members, {uid: name for uid in members})
            if blocked:
                raise DatasetConflict(f"{len(blocked)} of these studies have a review open in {name!r}: decide or "
                                      "cancel it first; nothing was changed")
            for uid in sorted(members):
                session.delete(session.get(DatasetStudy, uid))
            if members:
                self._commit(session, actor, groups, name, f"studies removed: {len(members)}")
        return len(members)

    def grant(self, name: str, group: str, right: str, *, actor: str, groups: Sequence[str] = ()) -> bool:
        """Give hub group ``group`` a right on a dataset; ``False`` if it had it already."""
        value = check_right(right).value
        with self._sessions() as session:
            self._dataset(session, name)
            if not isinstance(group, str) or not group or not self._group_exists(group):
                raise DatasetAdminError(f"the hub has no group named {group!r}: create it (or check the spelling) "
                                        "before granting it a dataset")
            exists = session.scalar(select(Grant.id).where(Grant.dataset == name, Grant.group_name == group,
                                                           Grant.right == value))
            if exists is not None:
                return False
            session.add(Grant(dataset=name, group_name=group, right=value))
            self._commit(session, actor, groups, name, f"granted {value} to group {group!r}")
        return True

    def revoke(self, name: str, group: str, right: str, *, actor: str, groups: Sequence[str] = ()) -> bool:
        """Take a right on a dataset from a group; ``False`` if it did not have it."""
        value = check_right(right).value
        with self._sessions() as session:
            self._dataset(session, name)
            row = session.scalars(select(Grant).where(Grant.dataset == name, Grant.group_name == group,
                                                      Grant.right == value)).first()
            if row is None:
                return False
            session.delete(row)
            self._commit(session, actor, groups, name, f"revoked {value} from group {group!r}")
        return True

    def add_rule(self, name: str, query: Mapping[str, Any], matching: Sequence[str], *, actor: str,
                 groups: Sequence[str] = ()) -> tuple[int, Membership]:
        """Save a rule and put the studies that match it now (``matching``, asked of the PACS by the
        caller with :func:`medimg_kernel.cohort.find_studies`) in the dataset, in one transaction."""
        filters = check_query(query)
        uids = _uids(matching, allow_empty=True)
        with self._sessions() as session:
            self._dataset(session, name)
            result = self._place(session, name, uids)
            rule = DatasetRule(dataset=name, query=filters, created_by=actor, created_at=utcnow())
            session.add(rule)
            session.flush()
            rule_id = rule.id
            self._commit(session, actor, groups, name, f"rule {rule_id} {qido_text(filters)}: {len(result.added)} "
                         f"studies added, {len(result.moved)} moved from other datasets")
        return rule_id, result

    def remove_rule(self, rule_id: int, *, actor: str, groups: Sequence[str] = ()) -> int:
        """Delete a saved rule (the studies it brought stay); returns its id."""
        with self._sessions() as session:
            rule = session.get(DatasetRule, rule_id)
            if rule is None:
                raise DatasetNotFound(f"no rule with id {rule_id}")
            dataset = rule.dataset
            session.delete(rule)
            self._commit(session, actor, groups, dataset, f"rule {rule_id} removed")
        return rule_id

    def assign_unassigned(self, name: str, study_uids: Iterable[str], *, rule_id: int) -> int:
        """Put studies that are in no dataset yet in ``name`` (a saved rule matched them on arrival)."""
        uids = _uids(study_uids, allow_empty=True)
        with self._sessions() as session:
            taken = set(session.scalars(select(DatasetStudy.study_instance_uid).where(
                DatasetStudy.study_instance_uid.in_(uids))))
            fresh = [uid for uid in uids if uid not in taken]
            if not fresh or session.get(Dataset, name) is None:
                return 0
            now = utcnow()
            session.add_all(DatasetStudy(study_instance_uid=uid, dataset=name, assigned_at=now) for uid in fresh)
            self._commit(session, "platform", (), name, f"rule {rule_id}: {len(fresh)} arriving studies added")
        return len(fresh)


def qido_text(filters: Mapping[str, str]) -> str:
    """A rule's filters as ``Attr=value&...`` (for messages and the audit log)."""
    return "&".join(f"{k}={v}" for k, v in filters.items())


def _uids(values: Iterable[str], *, allow_empty: bool = False) -> list[str]:
    uids = list(dict.fromkeys(values)) if not isinstance(values, str) else [values]
    for uid in uids:
        if not isinstance(uid, str) or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid) or len(uid) > 64:
            raise DatasetAdminError(f"{str(uid)[:80]!r} is not a StudyInstanceUID (digits and dots, at most 64)")
    if not uids and not allow_empty:
        raise DatasetAdminError("no StudyInstanceUID given")
    return uids


__all__ = ["AUDIT_ACTION", "DatasetAdmin", "DatasetAdminError", "DatasetConflict", "DatasetNotFound", "DatasetView",
           "PacsUnanswered",
           "Membership", "check_name", "check_query", "check_right", "qido_text"]
