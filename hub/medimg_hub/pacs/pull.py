"""Pull a cohort from another PACS (``[[remotes]]``) into a dataset, de-identified at the door.

``medimg pacs pull --from hospital --query PatientID=RES* --dataset trial-7`` finds the studies on
the remote (QIDO-RS, :func:`medimg_kernel.cohort.find_studies`), retrieves each series (WADO-RS),
by default de-identifies every instance (:func:`medimg_kernel.deid.deidentify`: PS3.15 Basic
Application Level Confidentiality Profile with consistent keyed pseudonyms and UID remapping
across a study and across pulls, method codes recorded), checks it with the checker
(:func:`medimg_kernel.deid.find_identifying`; an instance that still holds an identifier is not
stored and its study fails with the reason), stores the study in the platform PACS (STOW-RS) and
puts it in the dataset. The research PACS never holds the original identifiers.

A pull is a **job** with a state file under ``var/pulls/<job>.json`` (mode 0600: it holds the
mapping of original to new Study Instance UIDs, hub side only): each study is ``done`` or
``failed`` with the reason. ``--resume JOB`` re-runs what is not done (a remote that timed out,
a PACS that refused); a study is stored whole or re-done whole (its new UIDs are the same each
time, so nothing is duplicated). The de-identification key is ``var/secrets/deid-key`` (0600),
made on first use: the same original always maps to the same pseudonym.

Structured reports are not pulled de-identified (the profile removes their content; listed).
"""

from __future__ import annotations

import json
import logging
import secrets as token_source
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy.orm import sessionmaker

from medimg_kernel.cohort import find_studies
from medimg_kernel.deid import DeidentificationOptions, deidentify, find_identifying
from medimg_kernel.dicom_json import first_value
from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import ConfigurationError, DICOMwebError

from medimg_hub.access.datasets import assign_study, seed_datasets
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.deidentify import NOT_EXPORTED
from medimg_hub.secrets import write_private
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

#: Instances per STOW-RS request when storing a pulled series.
STORE_BATCH = 50


class PullError(ConfigurationError):
    """A pull cannot start (unknown job, dataset or remote); the message says which."""


@dataclass
class PullJob:
    """A pull's state, as kept in ``var/pulls/<id>.json``."""

    id: str
    remote: str
    query: dict[str, str]
    dataset: str
    deidentify: bool
    created: str
    #: Original StudyInstanceUID → "done", "pending" or "failed: reason".
    studies: dict[str, str] = field(default_factory=dict)
    #: Original StudyInstanceUID → the StudyInstanceUID stored in the platform PACS.
    stored_as: dict[str, str] = field(default_factory=dict)
    #: Series not pulled, and why.
    skipped: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(1 for v in self.studies.values() if v == "done")

    @property
    def failed(self) -> dict[str, str]:
        return {k: v for k, v in self.studies.items() if v.startswith("failed")}


def _jobs_dir(settings: Settings) -> Path:
    return settings.var_dir / "pulls"


def load_job(settings: Settings, job_id: str) -> PullJob:
    path = _jobs_dir(settings) / f"{job_id}.json"
    if not path.is_file():
        raise PullError(f"no pull job {job_id!r} (state files: {_jobs_dir(settings)})")
    return PullJob(**json.loads(path.read_text()))


def save_job(settings: Settings, job: PullJob) -> Path:
    path = _jobs_dir(settings) / f"{job.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(asdict(job), indent=1))
    return path


def deid_options(settings: Settings) -> DeidentificationOptions:
    """The platform's de-identification key (``var/secrets/deid-key``, 0600, made on first use)."""
    path = settings.var_dir / "secrets" / "deid-key"
    if not path.exists():
        write_private(path, token_source.token_hex(32))
    return DeidentificationOptions(key=bytes.fromhex(path.read_text().strip()))


def new_job(remote: str, query: Mapping[str, str], dataset: str, deidentify_: bool) -> PullJob:
    return PullJob(id=uuid.uuid4().hex[:12], remote=remote, query=dict(query), dataset=dataset,
                   deidentify=deidentify_, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def run_pull(settings: Settings, job: PullJob, source: DICOMwebProtocol, target: DICOMwebProtocol, *,
             progress: Callable[[int], object] | None = None) -> PullJob:
    """Pull every study of ``job`` that is not done; the state is saved after each study.

    Parameters
    ----------
    source
        The remote (``remote_connection(settings, job.remote).client()``).
    target
        The platform PACS (``pacs_connection(settings).client()``).
    """
    if not any(d.name == job.dataset for d in settings.datasets):
        raise PullError(f"no dataset {job.dataset!r}; known: {[d.name for d in settings.datasets]}")
    if not job.studies:
        job.studies = {uid: "pending" for uid in find_studies(source, job.query)}
        save_job(settings, job)
    options = deid_options(settings) if job.deidentify else None
    upgrade(settings.database_url)  # the pull may be the platform database's first use
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    sessions = sessionmaker(engine)
    try:
        for study, state in list(job.studies.items()):
            if state == "done":
                continue
            try:
                stored_as = _pull_study(source, target, study, options, job)
                with sessions.begin() as session:
                    assign_study(session, stored_as, None, dataset=job.dataset)
                job.studies[study], job.stored_as[study] = "done", stored_as
            except (DICOMwebError, _NotDeidentified) as exc:
                job.studies[study] = f"failed: {exc}"
                log.warning("pull %s: study %d of %d failed: %s", job.id, list(job.studies).index(study) + 1,
                            len(job.studies), exc)
            save_job(settings, job)
            if progress is not None:
                progress(1)
    finally:
        engine.dispose()
    return job


class _NotDeidentified(Exception):
    """An instance still holds an identifier after de-identification; its study is not stored."""


def _pull_study(source: DICOMwebProtocol, target: DICOMwebProtocol, study: str,
                options: DeidentificationOptions | None, job: PullJob) -> str:
    """Retrieve, de-identify, check and store one study (all series checked before any is stored)."""
    ready: list[Dataset] = []
    for series in source.search_for_series(study):
        series_uid, modality = first_value(series, "0020000E"), first_value(series, "00080060")
        if options is not None and modality in NOT_EXPORTED:
            note = f"a {modality} series of study {len(job.stored_as) + 1}: {NOT_EXPORTED[modality]}"
            if note not in job.skipped:
                job.skipped.append(note)
            continue
        for ds in source.iter_series(study, series_uid):
            if options is not None:
                deidentify(ds, options)
                problems = find_identifying(ds)
                if problems:
                    raise _NotDeidentified(f"an instance would keep identifiers ({'; '.join(problems[:3])}); "
                                           "nothing of the study was stored")
            ready.append(ds)
    if not ready:
        raise _NotDeidentified("no instance to store (every series was skipped)")
    for start in range(0, len(ready), STORE_BATCH):
        answer = target.store_instances(ready[start:start + STORE_BATCH])
        failed = getattr(answer, "FailedSOPSequence", None)
        if failed:
            raise DICOMwebError(f"the platform PACS refused {len(failed)} instance(s)")
    return str(ready[0].StudyInstanceUID)


__all__ = ["PullError", "PullJob", "load_job", "save_job", "deid_options", "new_job", "run_pull"]
