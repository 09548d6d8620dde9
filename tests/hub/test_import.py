"""Importing files from outside into a real Orthanc: folders, zip archives, DICOMDIRs, bad files
listed with the reason and skipped (never aborting the rest), idempotent, and ``medimg import``
putting studies in a dataset."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.fileset import FileSet

from medimg_hub.access.datasets import DatasetDirectory, seed_datasets
from medimg_hub.cli.intake import import_command
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.settings import DatasetSettings, Settings, TasksSettings
from medimg_kernel.errors import DicomFileError
from medimg_kernel.importer import import_files
from tests.series_factory import small_ct_series

pytestmark = pytest.mark.integration


def _bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _messy_folder(root: Path, seed: int) -> tuple[Path, list, list]:
    """A collaborator's delivery: a good series in files, another in a zip, and junk in both."""
    folder = root / "delivery"
    (folder / "cd" / "sub").mkdir(parents=True)
    (folder / "cd" / "zz").mkdir()
    files, zipped = small_ct_series(seed=seed), small_ct_series(seed=seed + 1)
    for i, ds in enumerate(files):
        (folder / "cd" / "sub" / f"IM{i:04d}").write_bytes(_bytes(ds))
    (folder / "cd" / "zz" / "IM0000-copy").write_bytes(_bytes(files[0]))  # the same instance twice (found second)
    (folder / "cd" / "notes.txt").write_text("scan protocol: see email")
    (folder / "cd" / "truncated.dcm").write_bytes(_bytes(files[1])[:300])
    no_sop = files[2].copy()
    del no_sop.SOPInstanceUID
    (folder / "cd" / "nosop.dcm").write_bytes(b"\0" * 128 + b"DICM" + _bytes(files[2])[132:300])
    with zipfile.ZipFile(folder / "archive.zip", "w") as archive:
        for i, ds in enumerate(zipped):
            archive.writestr(f"series/{i}.dcm", _bytes(ds))
        archive.writestr("../../etc/evil.dcm", _bytes(zipped[0]))
        archive.writestr("readme.pdf", b"%PDF-1.4 not dicom")
    return folder, files, zipped


def test_a_messy_delivery_imports_what_it_can_and_says_why_not_the_rest(orthanc, tmp_path):
    folder, files, zipped = _messy_folder(tmp_path, seed=41)
    client = orthanc.client()
    seen: list[int] = []
    report = import_files(client, [folder / "cd", folder / "archive.zip", tmp_path / "missing"], progress=seen.append,
                          batch_bytes=3000)
    assert report.stored == {str(files[0].StudyInstanceUID): len(files), str(zipped[0].StudyInstanceUID): len(zipped)}
    reasons = {Path(s.source.split("!")[-1]).name: s.reason for s in report.skipped}
    assert reasons.keys() == {"IM0000-copy", "notes.txt", "truncated.dcm", "nosop.dcm", "evil.dcm", "readme.pdf",
                              "missing"}
    assert "same SOPInstanceUID as" in reasons["IM0000-copy"]
    assert reasons["notes.txt"].startswith("not a DICOM file") and reasons["readme.pdf"].startswith("not a DICOM file")
    assert reasons["truncated.dcm"].startswith("malformed DICOM") or "missing" in reasons["truncated.dcm"]
    assert "outside the archive" in reasons["evil.dcm"] and "no such file" in reasons["missing"]
    assert sum(seen) == len(files) + len(zipped) + 5  # every file read counts once (not the refused member, the missing path)
    assert report.summary() == (f"2 studies, 2 series: {len(files) + len(zipped)} instances stored, 0 already present, "
                                "7 files skipped")
    for series in (files, zipped):
        assert len(client.search_for_instances(str(series[0].StudyInstanceUID))) == len(series)

    again = import_files(client, [folder])
    assert again.instances_stored == 0 and sum(again.present.values()) == len(files) + len(zipped)


def test_a_dicomdir_imports_the_files_it_lists(orthanc, tmp_path):
    series = small_ct_series(seed=43)
    fileset = FileSet()
    for ds in series:
        fileset.add(ds)
    fileset.write(tmp_path / "media")
    report = import_files(orthanc.client(), [tmp_path / "media" / "DICOMDIR"])
    assert report.stored == {str(series[0].StudyInstanceUID): len(series)} and report.directories == 1
    assert not report.skipped


def test_the_platforms_own_loader_refuses_everything_when_one_file_is_bad(orthanc, tmp_path):
    folder, files, _ = _messy_folder(tmp_path, seed=45)
    with pytest.raises(DicomFileError, match="cannot be imported.*nothing was sent"):
        ingest_files(orthanc.client(), [folder / "cd"])
    assert orthanc.client().search_for_instances(str(files[0].StudyInstanceUID)) == []


def test_medimg_import_puts_studies_in_the_dataset_and_lists_what_it_skipped(orthanc, tmp_path):
    settings = Settings(platform=orthanc.settings.platform, pacs=orthanc.settings.pacs,
                        tasks=TasksSettings(database_url=f"sqlite:///{tmp_path / 'platform.db'}"),
                        datasets=(DatasetSettings("trial-7", "a collaborator's trial", None),))
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    folder, files, zipped = _messy_folder(tmp_path, seed=47)
    runner = CliRunner()

    refused = runner.invoke(import_command, [str(folder), "--dataset", "trial-8"], obj=settings)
    assert refused.exit_code == 2 and "no dataset 'trial-8'; known: trial-7" in refused.output

    result = runner.invoke(import_command, [str(folder), "--dataset", "trial-7"], obj=settings)
    assert result.exit_code == 1, result.output  # files were skipped: said, and the exit status says so
    assert f"2 studies, 2 series: {len(files) + len(zipped)} instances stored" in result.output
    assert "skipped" in result.output and "notes.txt: not a DICOM file" in result.output
    directory = DatasetDirectory(engine, ttl_s=0)
    for series in (files, zipped):
        assert directory.dataset_of(str(series[0].StudyInstanceUID)) == "trial-7"
    from medimg_hub.access.audit import AuditLog

    rows = AuditLog(engine).query(action="import")
    assert {r.study_instance_uid for r in rows if r.outcome.value == "allowed"} == {
        str(files[0].StudyInstanceUID), str(zipped[0].StudyInstanceUID)}
    assert any(r.outcome.value == "error" and "6 files skipped" in (r.detail or "") for r in rows)
    assert not any("notes.txt" in (r.detail or "") for r in rows)  # counts, never file names

    clean = tmp_path / "clean"
    clean.mkdir()
    for i, ds in enumerate(small_ct_series(seed=49)):
        (clean / f"{i}.dcm").write_bytes(_bytes(ds))
    assert runner.invoke(import_command, [str(clean), "--dataset", "trial-7"], obj=settings).exit_code == 0
    twice = runner.invoke(import_command, [str(clean), "--dataset", "trial-7"], obj=settings)
    assert twice.exit_code == 0 and "0 instances stored" in twice.output and "already present" in twice.output
    engine.dispose()
