"""Load DICOM files into the PACS over STOW-RS, in batches, without duplicating what is there.

A study whose instances are all in the PACS already is skipped, so loading the
same files twice changes nothing. Files that are not DICOM are refused before
anything is sent, naming the file; a STOW failure names the batch's study and
leaves what was stored earlier untouched.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import DicomFileError, DICOMwebError

log = logging.getLogger(__name__)

#: Upper size of one STOW-RS request body, in bytes.
STOW_BATCH_BYTES = 64 * 1024 * 1024


@dataclass
class IngestReport:
    """What :func:`ingest_files` did, per study."""

    stored: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def instances_stored(self) -> int:
        return sum(self.stored.values())


def _read_headers(paths: Iterable[Path], institutions: dict[str, str | None] | None = None) -> dict[str, list[Path]]:
    """Group files by StudyInstanceUID, refusing files that are not DICOM.

    ``institutions``, when given, receives each study's InstitutionName (from its first file).
    """
    by_study: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "InstitutionName"])
            by_study[str(ds.StudyInstanceUID)].append(path)
            if institutions is not None and str(ds.StudyInstanceUID) not in institutions:
                institutions[str(ds.StudyInstanceUID)] = str(ds.get("InstitutionName", "")).strip() or None
        except (InvalidDicomError, AttributeError, EOFError, OSError, ValueError) as exc:
            raise DicomFileError(path, f"cannot be ingested: not a readable DICOM file with a StudyInstanceUID ({exc})") from exc
    return by_study


def _batches(paths: Sequence[Path], max_bytes: int) -> Iterable[list[Dataset]]:
    batch: list[Dataset] = []
    size = 0
    for path in paths:
        batch.append(pydicom.dcmread(path))
        size += path.stat().st_size
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def ingest_files(
    client: DICOMwebProtocol,
    paths: Iterable[Path],
    *,
    progress: Callable[[int], None] | None = None,
    batch_bytes: int = STOW_BATCH_BYTES,
    assign: Callable[[str, str | None], None] | None = None,
) -> IngestReport:
    """Store DICOM files in the PACS, study by study, skipping complete studies.

    Parameters
    ----------
    client
        A DICOMweb client with STOW-RS rights (hub side).
    paths
        DICOM Part 10 files.
    progress
        Called with the number of instances handled after each batch or skipped study.
    assign
        Called with (StudyInstanceUID, InstitutionName or None) for every study stored or
        already complete, e.g. :func:`medimg_hub.access.datasets.ingest_assigner` to put
        it in its dataset. A study is assigned before its instances are sent.
    """
    report = IngestReport()
    institutions: dict[str, str | None] = {}
    for study_uid, files in _read_headers(paths, institutions).items():
        if assign is not None:
            assign(study_uid, institutions.get(study_uid))
        present = len(client.search_for_instances(study_uid, fields=["SOPInstanceUID"]))
        if present >= len(files):
            report.skipped.append(study_uid)
            if progress:
                progress(len(files))
            continue
        stored = 0
        for batch in _batches(sorted(files), batch_bytes):
            response = client.store_instances(batch)
            failed = getattr(response, "FailedSOPSequence", None)
            if failed:
                raise DICOMwebError(f"STOW-RS refused {len(failed)} instance(s) of study {study_uid}")
            stored += len(batch)
            if progress:
                progress(len(batch))
        report.stored[study_uid] = stored
        log.info("stored %d instances of study %s", stored, study_uid)
    return report
