"""Datasets, their studies and their grants in the platform database (DESIGN.md §4).

Datasets, memberships and grants are administered in the database (:mod:`medimg_hub.datasets`);
the operator's ``[[datasets]]`` settings seed the ones the database lacks (:func:`seed_datasets`,
when the platform API starts). Studies join
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
class SeedReport:
    """What :func:`seed_datasets` did."""

    datasets_added: tuple[str, ...]
    grants_added: int
    #: Datasets of the settings that exist in the database with other grants or another
    #: description or institution: the database wins (they are administered there).
    differing: tuple[str, ...] = ()


def _grants_of(dataset: DatasetSettings) -> set[tuple[str, str, str]]:
    pairs = ((Right.READ, dataset.read), (Right.WRITE, dataset.write), (Right.REVIEW, dataset.review),
             (Right.FINALISE, dataset.finalise), (Right.EXPORT, dataset.export))
    return {(dataset.name, group, right.value) for right, groups in pairs for group in groups}


def seed_datasets(bind: Engine | Session, datasets: Sequence[DatasetSettings]) -> SeedReport:
    """Create the ``[[datasets]]`` of the settings that the database lacks, with their grants.

    Datasets are administered in the database (:mod:`medimg_hub.datasets`: the platform API, the
    admin page, ``medimg datasets``); the settings file only seeds them. A dataset that exists
    already keeps its grants, description and institution even where the settings differ (a
    warning names it), and datasets absent from the settings stay as they are.

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
            return seed_datasets(session, datasets)
    session = bind
    existing = {d.name: d for d in session.scalars(select(Dataset))}
    have = {(g.dataset, g.group_name, g.right) for g in session.scalars(select(Grant))}
    added, differing, grants = [], [], 0
    for item in datasets:
        row = existing.get(item.name)
        if row is not None:
            mine = {g for g in have if g[0] == item.name}
            if mine != _grants_of(item) or (row.description, row.institution) != (item.description,
                                                                                 item.institution or None):
                differing.append(item.name)
            continue
        session.add(Dataset(name=item.name, description=item.description, institution=item.institution or None))
        session.flush()
        for dataset, group, right in sorted(_grants_of(item)):
            session.add(Grant(dataset=dataset, group_name=group, right=right))
            grants += 1
        added.append(item.name)
    session.flush()
    if added:
        log.info("datasets seeded from the settings: %s (%d grants)", ", ".join(added), grants)
    if differing:
        log.warning("[[datasets]] %s of the settings differ from the database, which is used (datasets are "
                    "administered with `medimg datasets` or the admin page; the settings only seed them)",
                    ", ".join(differing))
    return SeedReport(tuple(added), grants, tuple(differing))


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

    def forget(self) -> None:
        """Drop every cached answer (after datasets, memberships or grants changed in this process)."""
        with self._lock:
            self._rights.clear()
            self._studies.clear()
            self._dataset_of.clear()

    def remove_unknown(self, study_uids: Iterable[str]) -> None:
        """Forget memberships (used when a store failed before the study existed)."""
        with self._sessions.begin() as session:
            session.execute(delete(DatasetStudy).where(DatasetStudy.study_instance_uid.in_(sorted(set(study_uids)))))
        with self._lock:
            self._studies.clear()
            self._dataset_of.clear()
