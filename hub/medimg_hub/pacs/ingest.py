"""Load the platform's own DICOM files (demo, benchmarks) into the PACS, all or nothing.

The import itself (folders, archives, idempotence, batching) is
:mod:`medimg_kernel.importer`; ``medimg import`` (``medimg_hub.cli.imports``) uses it for
files from outside, listing and skipping bad ones. Here a bad file refuses the whole load
before anything is sent, naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.importer import BATCH_BYTES, import_files

log = logging.getLogger(__name__)

#: Upper size of one STOW-RS request body, in bytes.
STOW_BATCH_BYTES = BATCH_BYTES


@dataclass
class IngestReport:
    """What :func:`ingest_files` did, per study."""

    stored: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def instances_stored(self) -> int:
        return sum(self.stored.values())


def ingest_files(
    client: DICOMwebProtocol,
    paths: Iterable[Path],
    *,
    progress: Callable[[int], None] | None = None,
    batch_bytes: int = STOW_BATCH_BYTES,
    assign: Callable[[str, str | None], None] | None = None,
) -> IngestReport:
    """Store the platform's own DICOM files (the demo, benchmarks) in the PACS; nothing if one is bad.

    :func:`medimg_kernel.importer.import_files` in strict mode: a file that is not DICOM refuses
    the whole load before anything is sent (:class:`~medimg_kernel.errors.DicomFileError` naming
    it), a STOW-RS refusal stops it (:class:`~medimg_kernel.errors.DICOMwebError`); instances
    the PACS holds already are not sent again.

    Parameters
    ----------
    client
        A DICOMweb client with STOW-RS rights (hub side).
    paths
        DICOM Part 10 files (or folders, archives).
    progress
        Called with the number of files handled, as they are.
    assign
        Called with (StudyInstanceUID, InstitutionName or None) for every study with
        instances to store, e.g. :func:`medimg_hub.access.datasets.ingest_assigner` to put
        it in its dataset. A study is assigned before its instances are sent.
    """
    done = import_files(client, paths, progress=progress, batch_bytes=batch_bytes, assign=assign, strict=True)
    for study, stored in done.stored.items():
        log.info("stored %d instances of study %s", stored, study)
    return IngestReport(stored=dict(done.stored),
                        skipped=[study for study in done.present if study not in done.stored])
