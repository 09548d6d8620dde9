"""Export a de-identified dataset at the research boundary (hub side).

:func:`export_deidentified` reads studies from a DICOMweb client (the PACS or the gateway),
de-identifies every instance with :func:`medimg_kernel.deid.deidentify` (PS3.15 Basic
Application Level Confidentiality Profile, new UIDs consistently mapped by a keyed hash, by
default with the Retain Longitudinal Temporal Information Modified Dates option) and writes
Part 10 files under ``out_dir/<study>/<series>/<instance>.dcm`` named by the *new* UIDs.
:func:`check_export` runs the checker (:func:`medimg_kernel.deid.find_identifying`) over a
folder. The UID map is never written: with the key it can be recomputed, without it not.

Structured reports (SR) are not exported: the profile removes their ContentSequence (``X``),
which leaves no valid SR; they are listed in the report as skipped, with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from medimg_kernel.deid import DeidentificationOptions, deidentify, find_identifying
from medimg_kernel.dicom_json import first_value
from medimg_kernel.dicomweb import DICOMwebProtocol

log = logging.getLogger(__name__)

_SERIES, _MODALITY = "0020000E", "00080060"
NOT_EXPORTED = {"SR": "structured reports lose their ContentSequence under the basic profile (action X)"}


@dataclass
class ExportReport:
    """What :func:`export_deidentified` wrote: files, and series skipped with the reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def export_deidentified(
    client: DICOMwebProtocol,
    study_instance_uids: Sequence[str],
    out_dir: Path,
    options: DeidentificationOptions,
    *,
    progress: Callable[[int], object] | None = None,
) -> ExportReport:
    """De-identify ``study_instance_uids`` from ``client`` into ``out_dir``.

    Parameters
    ----------
    client
        Hub-side DICOMweb client (or the gateway with the exporter's grant).
    study_instance_uids
        The dataset's studies.
    out_dir
        Destination folder (created); files are named by their new UIDs.
    options
        Key and options of the profile; one key per export keeps UIDs consistent within it
        (and across exports that share the key).
    progress
        ``progress(1)`` after each study.

    Returns
    -------
    ExportReport
        Files written; series not exported and why. Every written file passed
        :func:`~medimg_kernel.deid.find_identifying` (an instance that does not is not written
        and is listed as skipped).
    """
    report = ExportReport()
    out_dir = Path(out_dir)
    for study_uid in study_instance_uids:
        for series in client.search_for_series(study_uid):
            series_uid, modality = first_value(series, _SERIES), first_value(series, _MODALITY)
            if modality in NOT_EXPORTED:
                report.skipped.append(f"{study_uid}/{series_uid} ({modality}): {NOT_EXPORTED[modality]}")
                continue
            for ds in client.iter_series(study_uid, series_uid):
                deidentify(ds, options)
                problems = find_identifying(ds, safe_descriptors=options.safe_descriptors)
                if problems:
                    report.skipped.append(f"an instance of {study_uid}/{series_uid}: {problems[:3]}")
                    continue
                path = out_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                report.files.append(path)
        log.info("exported study %s de-identified", study_uid)
        if progress is not None:
            progress(1)
    return report


def check_export(folder: Path, *, safe_descriptors: Sequence[str] = ()) -> dict[Path, list[str]]:
    """``{file: problems}`` for every file under ``folder`` that is not de-identified."""
    found = {}
    for path in sorted(Path(folder).rglob("*.dcm")):
        problems = find_identifying(pydicom.dcmread(path, stop_before_pixels=True), safe_descriptors=safe_descriptors)
        if problems:
            found[path] = problems
    return found


__all__ = ["ExportReport", "export_deidentified", "check_export", "NOT_EXPORTED"]
