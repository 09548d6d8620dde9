"""Datasets, their studies and their grants in the platform database (DESIGN.md §4).

The operator's ``[[datasets]]`` settings are the source of the grants: :func:`sync_datasets`
makes the database equal to them (idempotently) when the platform API starts. Studies join
a dataset by their InstitutionName when they are loaded (:func:`assign_study`, called by
:func:`medimg_hub.pacs.ingest.ingest_files` through its ``assign`` callback) or when stored through
the gateway. :class:`DatasetDirectory` is the gateway's cached view of all this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from medimg_hub.access.models import Dataset, DatasetStudy, Grant, Right
from medimg_hub.db import utcnow
from medimg_hub.settings import DatasetSettings

log = logging.getLogger(__name__)

#: Rights by dataset name, e.g. ``{"site-a": {"read", "write"}}``.
Rights = dict[str, set[str]]


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_datasets` changed."""

    datasets_added: tuple[str, ...]
    grants_added: int
    grants_removed: int


def _grants_of(dataset: DatasetSettings) -> set[tuple[str, str, str]]:
    pairs = ((Right.READ, dataset.read), (Right.WRITE, dataset.write), (Right.REVIEW, dataset.review),
             (Right.FINALISE, dataset.finalise))
    return {(dataset.name, group, right.value) for right, groups in pairs for group in groups}


def sync_datasets(bind: Engine | Session, datasets: Sequence[DatasetSettings]) -> SyncReport:
    """Make the database's datasets and grants equal to the settings.

    Datasets missing from the settings keep their rows and studies (memberships are data)
    but lose every grant, so nobody reaches them until they are configured again.

    Parameters
    ----------
    bind
        An engine (a transaction is opened and committed) or a session (flushed, the
        caller commits).
    datasets
        ``settings.datasets``.
    """
    if isinstance(bind, Engine):
        with Session(bind) as session, session.begin():
            return sync_datasets(session, datasets)
    session = bind
    existing = {d.name: d for d in session.scalars(select(Dataset))}
    added = []
    for item in datasets:
        row = existing.get(item.name)
        if row is None:
            session.add(Dataset(name=item.name, description=item.description, institution=item.institution or None))
            added.append(item.name)
        else:
            row.description, row.institution = item.description, item.institution or None
    session.flush()
    wanted = set().union(*(_grants_of(d) for d in datasets)) if datasets else set()
    have = {(g.dataset, g.group_name, g.right): g for g in session.scalars(select(Grant))}
    for key in set(have) - wanted:
        session.delete(have[key])
    for dataset, group, right in sorted(wanted - set(have)):
        session.add(Grant(dataset=dataset, group_name=group, right=right))
    session.flush()
    report = SyncReport(tuple(added), len(wanted - set(have)), len(set(have) - wanted))
    log.info("datasets synchronised: %d added, %d grants added, %d removed",
             len(added), report.grants_added, report.grants_removed)
    return report


def assign_study(session: Session, study_instance_uid: str, institution: str | None, *,
                 dataset: str | None = None) -> str | None:
    """Put a study in a dataset; returns the study's dataset (``None``: no dataset matches).

    A study already in a dataset stays where it is (membership never moves silently).

    Parameters
    ----------
    session
        An open session; the caller commits.
    study_instance_uid
        The study.
    institution
        Its InstitutionName; chooses the dataset whose ``institution`` equals it.
    dataset
        A dataset chosen explicitly (takes precedence over ``institution``).
    """
    current = session.get(DatasetStudy, study_instance_uid)
    if current is not None:
        return current.dataset
    if dataset is None:
        if not institution:
            return None
        dataset = session.scalars(select(Dataset.name).where(Dataset.institution == institution.strip())).first()
        if dataset is None:
            return None
    elif session.get(Dataset, dataset) is None:
        return None
    session.add(DatasetStudy(study_instance_uid=study_instance_uid, dataset=dataset, assigned_at=utcnow()))
    session.flush()
    log.info("study %s assigned to dataset %s", study_instance_uid, dataset)
    return dataset


def rights_for(session: Session, groups: Iterable[str]) -> Rights:
    """The rights that membership of ``groups`` gives, by dataset."""
    names = sorted(set(groups))
    rights: Rights = {}
    if not names:
        return rights
    for dataset, right in session.execute(select(Grant.dataset, Grant.right).where(Grant.group_name.in_(names))):
        rights.setdefault(dataset, set()).add(right)
    return rights


def ingest_assigner(engine: Engine) -> Callable[[str, str | None], None]:
    """A callback for :func:`medimg_hub.pacs.ingest.ingest_files` that assigns each study by InstitutionName."""
    sessions = sessionmaker(engine)

    def assign(study_instance_uid: str, institution: str | None) -> None:
        with sessions.begin() as session:
            if assign_study(session, study_instance_uid, institution) is None:
                log.warning("study %s matches no dataset (its InstitutionName is in no [[datasets]] table)",
                            study_instance_uid)

    return assign


class DatasetDirectory:
    """The gateway's view of datasets: rights by groups, and study membership, cached briefly.

    Parameters
    ----------
    engine
        The platform database.
    ttl_s
        Seconds a cached answer is used. Memberships added by this process are seen at
        once; those added by other processes (ingest) within ``ttl_s``.
    """

    def __init__(self, engine: Engine, ttl_s: float = 5.0) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._rights: dict[frozenset[str], tuple[float, Rights]] = {}
        self._studies: dict[frozenset[str], tuple[float, frozenset[str]]] = {}
        self._dataset_of: dict[str, tuple[float, str | None]] = {}

    def _fresh(self, stamp: float) -> bool:
        return time.monotonic() - stamp < self._ttl_s

    def rights(self, groups: Iterable[str]) -> Rights:
        """Rights of a member of ``groups``, by dataset."""
        key = frozenset(groups)
        with self._lock:
            hit = self._rights.get(key)
        if hit and self._fresh(hit[0]):
            return hit[1]
        with self._sessions() as session:
            value = rights_for(session, key)
        with self._lock:
            self._rights[key] = (time.monotonic(), value)
        return value

    def dataset_of(self, study_instance_uid: str) -> str | None:
        """The dataset a study is in (``None``: in none); a membership is cached ``ttl_s``."""
        with self._lock:
            hit = self._dataset_of.get(study_instance_uid)
        if hit and self._fresh(hit[0]):
            return hit[1]
        with self._sessions() as session:
            value = session.scalars(select(DatasetStudy.dataset).where(
                DatasetStudy.study_instance_uid == study_instance_uid)).first()
        with self._lock:
            if len(self._dataset_of) > 100_000:
                self._dataset_of.clear()
            self._dataset_of[study_instance_uid] = (time.monotonic(), value)
        return value

    def datasets_of(self, study_uids: Iterable[str]) -> dict[str, str]:
        """Datasets of several studies (studies in no dataset are left out)."""
        uids = sorted(set(study_uids))
        with self._sessions() as session:
            rows = session.execute(select(DatasetStudy.study_instance_uid, DatasetStudy.dataset).where(
                DatasetStudy.study_instance_uid.in_(uids)))
            return {uid: dataset for uid, dataset in rows}

    def studies_in(self, datasets: Iterable[str]) -> frozenset[str]:
        """Every StudyInstanceUID in ``datasets``."""
        key = frozenset(datasets)
        if not key:
            return frozenset()
        with self._lock:
            hit = self._studies.get(key)
        if hit and self._fresh(hit[0]):
            return hit[1]
        with self._sessions() as session:
            value = frozenset(session.scalars(select(DatasetStudy.study_instance_uid).where(
                DatasetStudy.dataset.in_(sorted(key)))))
        with self._lock:
            self._studies[key] = (time.monotonic(), value)
        return value

    def dataset_for_institution(self, institution: str) -> str | None:
        """The dataset whose studies have this InstitutionName."""
        with self._sessions() as session:
            return session.scalars(select(Dataset.name).where(Dataset.institution == institution.strip())).first()

    def names(self) -> list[str]:
        """Every dataset's name."""
        with self._sessions() as session:
            return list(session.scalars(select(Dataset.name).order_by(Dataset.name)))

    def exists(self, dataset: str) -> bool:
        with self._sessions() as session:
            return session.get(Dataset, dataset) is not None

    def assign(self, study_instance_uid: str, dataset: str) -> str | None:
        """Put a new study in ``dataset`` (no-op if it is in one); clears the membership cache."""
        with self._sessions.begin() as session:
            result = assign_study(session, study_instance_uid, None, dataset=dataset)
        with self._lock:
            self._studies.clear()
            self._dataset_of.pop(study_instance_uid, None)
        return result

    def remove_unknown(self, study_uids: Iterable[str]) -> None:
        """Forget memberships (used when a store failed before the study existed)."""
        with self._sessions.begin() as session:
            session.execute(delete(DatasetStudy).where(DatasetStudy.study_instance_uid.in_(sorted(set(study_uids)))))
        with self._lock:
            self._studies.clear()
            self._dataset_of.clear()
