"""Loading files into the PACS: idempotent, and bad files refused before anything is sent."""

from __future__ import annotations

import pytest

from medimg_hub.pacs.ingest import ingest_files
from medimg_kernel.errors import DicomFileError
from tests.series_factory import small_ct_series

pytestmark = pytest.mark.integration


def _write(series, folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in series:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_ingest_twice_stores_once(orthanc, tmp_path):
    series = small_ct_series(seed=21)
    paths = _write(series, tmp_path / "a")
    client = orthanc.client()
    seen = []
    first = ingest_files(client, paths, progress=seen.append, batch_bytes=2000)
    assert first.instances_stored == len(series) and sum(seen) == len(series)
    second = ingest_files(client, paths)
    assert second.instances_stored == 0 and second.skipped == [str(series[0].StudyInstanceUID)]
    assert len(client.search_for_instances(str(series[0].StudyInstanceUID))) == len(series)


def test_non_dicom_file_is_refused_before_anything_is_stored(orthanc, tmp_path):
    series = small_ct_series(seed=22)
    paths = _write(series, tmp_path / "b")
    junk = tmp_path / "b" / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(DicomFileError, match="notes.txt"):
        ingest_files(orthanc.client(), [*paths, junk])
    assert orthanc.client().search_for_studies(search_filters={"StudyInstanceUID": str(series[0].StudyInstanceUID)}) == []
