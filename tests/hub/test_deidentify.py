"""De-identified export: PS3.15 basic profile, consistent UIDs, checker, dciodvfy.

Uses the session ``orthanc`` fixture (a real PACS) with one demo site's studies (CT + SEG).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from medimg_kernel.phantom.demo import generate_demo
from medimg_hub.pacs.deidentify import check_export, export_deidentified
from medimg_hub.pacs.ingest import ingest_files
from medimg_kernel.deid import DeidentificationOptions, deidentify, find_identifying
from medimg_kernel.seg import describe_seg

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(orthanc, tmp_path_factory):
    demo = tmp_path_factory.mktemp("deid-demo")
    manifest = generate_demo(demo, n_sites=1, studies_per_site=2)
    ingest_files(orthanc.client(), sorted(demo.rglob("*.dcm")))
    studies = [s.study_instance_uid for s in manifest.studies]
    out = tmp_path_factory.mktemp("deid-out")
    options = DeidentificationOptions(key=b"test-export-key", safe_descriptors=("organs",))
    report = export_deidentified(orthanc.client(), studies, out, options)
    return manifest, out, report, options


def test_export_passes_the_checker_and_keeps_labels_findable(exported):
    manifest, out, report, _ = exported
    assert report.files and not [s for s in report.skipped if "SR" not in s]
    assert check_export(out, safe_descriptors=("organs",)) == {}
    originals = {s.study_instance_uid for s in manifest.studies} | {s.series_instance_uid for s in manifest.studies}
    names = {s.patient_name for s in manifest.studies} | {s.patient_id for s in manifest.studies}
    for path in report.files:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107", "113105"]
        assert ds.StudyInstanceUID not in originals and ds.SeriesInstanceUID not in originals
        assert str(ds.get("PatientName", "")) not in names or not str(ds.get("PatientName", ""))
        assert ds.PatientID not in names and ds.PatientID.startswith("ANON-")
        assert "InstitutionName" not in ds or ds.InstitutionName == "ANONYMIZED"


def test_uids_are_mapped_consistently_across_files(exported):
    _, _, report, _ = exported
    segs = [pydicom.dcmread(p) for p in report.files if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SEG"]
    images = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in report.files}
    assert segs
    for seg in segs:
        info = describe_seg(seg)
        assert info.type_id == "organs"   # the finalised SEG stays a label after export
        assert set(info.source_series_instance_uids) <= images  # references follow the new UIDs
        frame_refs = {pydicom.dcmread(p, stop_before_pixels=True).FrameOfReferenceUID for p in report.files
                      if pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID == seg.StudyInstanceUID}
        assert len(frame_refs) == 1


def test_exported_files_are_valid_dicom(exported, assert_valid_dicom):
    _, _, report, _ = exported
    by_series: dict[str, Path] = {}
    for path in report.files:
        by_series.setdefault(str(path.parent), path)
    for path in by_series.values():  # one instance per series (CT and SEG of each study)
        assert_valid_dicom(path)


def test_checker_flags_a_patient_name(exported):
    _, _, report, _ = exported
    ds = pydicom.dcmread(report.files[0])
    ds.PatientName = "DOE^JANE"
    assert any("PatientName" in p for p in find_identifying(ds))
    ds.PatientName = ""
    ds.add_new(0x00091001, "LO", "site secret")
    assert any("private" in p for p in find_identifying(ds))


def test_undeidentified_file_is_flagged(tmp_path):
    demo = generate_demo(tmp_path / "demo", n_sites=1, studies_per_site=1)
    path = next((tmp_path / "demo").rglob("CT*.dcm"))
    problems = find_identifying(pydicom.dcmread(path))
    assert "DeidentificationMethodCodeSequence lacks 113100" in problems
    assert any(p.startswith("PatientName") for p in problems) and demo.studies


def test_same_key_same_uids_other_key_other_uids(tmp_path):
    generate_demo(tmp_path / "demo", n_sites=1, studies_per_site=1)
    path = next((tmp_path / "demo").rglob("CT*.dcm"))
    one = deidentify(pydicom.dcmread(path), DeidentificationOptions(key=b"a"))
    again = deidentify(pydicom.dcmread(path), DeidentificationOptions(key=b"a"))
    other = deidentify(pydicom.dcmread(path), DeidentificationOptions(key=b"b"))
    assert one.SOPInstanceUID == again.SOPInstanceUID != other.SOPInstanceUID
    assert one.StudyDate == again.StudyDate and one.StudyDate != pydicom.dcmread(path).StudyDate
    assert find_identifying(one) == []


def test_the_action_table_is_the_standards_whole_table_e11():
    """PS3.15 Table E.1-1 (2026c) as dicom-anonymizer ships it: every attribute, repeating groups too."""
    from medimg_kernel.deid import ACTIONS, MASKED_E11, TABLE_E11, action_for

    assert len(TABLE_E11) == 652 and len(MASKED_E11) == 3
    assert ACTIONS["PatientName"] == "Z" and ACTIONS["ScheduledPerformingPhysicianName"] == "X"
    assert ACTIONS["StudyInstanceUID"] == "U" and ACTIONS["InstitutionName"] == "X/Z/D"
    assert action_for(0x60023000) == "X"  # Overlay Data in any 60xx group
    assert action_for(0x00280010) == "K"  # Rows: not in the table, kept
