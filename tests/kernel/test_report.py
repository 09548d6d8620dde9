"""TID 1500 measurement reports of segment volumes."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.sr.codedict import codes

from medimg_kernel.errors import ReportError
from medimg_kernel.sr import read_sr, read_sr_report, segment_volumes_mm3, write_sr
from medimg_kernel.seg import write_seg
from medimg_kernel.volume import Volume
from tests.kernel.test_segmentation import MODEL, OBLIQUE, SEGMENTS, make_labels, make_volume


def expected_volumes(labels: np.ndarray, volume: Volume) -> dict[str, float]:
    voxel = volume.spacing[0] * volume.spacing[1] * volume.spacing[2]
    return {name: float(np.count_nonzero(labels == i + 1)) * voxel for i, name in enumerate(SEGMENTS)}


@pytest.mark.parametrize("pass_labels", [True, False])
def test_model_report_volumes_and_references(pass_labels, write_and_read, assert_valid_dicom):
    volume = make_volume(OBLIQUE["oblique"])
    labels = make_labels()
    seg = write_and_read(write_seg(volume, labels, SEGMENTS, type_id="liver", algorithm=MODEL))
    sr = write_sr(seg, volume, labels if pass_labels else None)
    assert_valid_dicom(sr)
    sr = write_and_read(sr)
    assert sr.Modality == "SR" and sr.SeriesNumber == 301 and sr.SeriesDescription == "model_liver"
    assert sr.StudyInstanceUID == volume.study_instance_uid
    volumes = read_sr(sr)
    assert list(volumes) == SEGMENTS
    for name, value in expected_volumes(labels, volume).items():
        assert volumes[name] == pytest.approx(value, rel=1e-9)
    assert volumes["spleen"] == 0.0
    report = read_sr_report(sr)
    assert report.segmentation_sop_instance_uid == seg.SOPInstanceUID
    assert report.source_series_instance_uid == volume.series_instance_uid
    assert report.observer_device == MODEL.name and report.observer_person is None
    evidence = {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence}
                for study in sr.CurrentRequestedProcedureEvidenceSequence for s in study.ReferencedSeriesSequence}
    assert evidence[seg.SeriesInstanceUID] == {seg.SOPInstanceUID}
    assert evidence[volume.series_instance_uid] == {ds.SOPInstanceUID for ds in volume.sources}


def test_reviewed_report_names_the_reviewer(write_and_read, assert_valid_dicom):
    volume = make_volume()
    labels = make_labels(absent=None)
    seg = write_and_read(write_seg(volume, labels, SEGMENTS, type_id="liver", content_creator="REVIEWER^ANNA"))
    sr = write_sr(seg, volume)
    assert_valid_dicom(sr)
    report = read_sr_report(write_and_read(sr))
    assert report.observer_person == "REVIEWER^ANNA"
    assert report.volumes_mm3 == pytest.approx(expected_volumes(labels, volume))


def test_overlapping_masks_are_measured_per_segment(write_and_read):
    volume = make_volume()
    masks = np.zeros((3, *volume.shape), bool)
    masks[0, 1:5, 2:9, 3:7] = True
    masks[1, 2:4, 5:9, 5:9] = True
    seg = write_seg(volume, masks, SEGMENTS, type_id="abdomen")
    volumes = read_sr(write_and_read(write_sr(seg, volume)))
    voxel = float(np.prod(volume.spacing))
    assert volumes == pytest.approx({"liver": 4 * 7 * 4 * voxel, "spleen": 2 * 4 * 4 * voxel, "kidney": 0.0})


def test_volume_measurement_is_coded_in_mm3(write_and_read):
    volume = make_volume()
    seg = write_seg(volume, make_labels(), SEGMENTS, type_id="liver")
    sr = write_and_read(write_sr(seg, volume))
    numbers = [item for item in _walk(sr) if item.get("ValueType") == "NUM"]
    units = {item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue for item in numbers}
    names = {item.ConceptNameCodeSequence[0].CodeValue for item in numbers}
    assert len(numbers) == len(SEGMENTS)
    assert units == {codes.UCUM.CubicMillimeter.value} and names == {codes.SCT.Volume.value}
    assert segment_volumes_mm3(make_labels(), (1.0, 2.0, 3.0), 3)[0] == np.count_nonzero(make_labels() == 1) * 6.0


def test_bad_input_is_refused():
    volume = make_volume()
    seg = write_seg(volume, make_labels(), SEGMENTS, type_id="liver")
    with pytest.raises(ReportError, match="needs a SEG"):
        write_sr(volume.sources[0], volume)
    with pytest.raises(ReportError, match="do not fit"):
        write_sr(seg, volume, np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ReportError, match="no sources"):
        write_sr(seg, Volume(volume.array, volume.spacing))
    other = make_volume(seed=1)
    with pytest.raises(ReportError, match="cannot measure SEG"):
        write_sr(seg, other)
    with pytest.raises(ReportError, match="not a readable TID 1500"):
        read_sr(seg)


def _walk(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def test_seg_and_sr_are_written_under_strict_pydicom_validation(strict_pydicom, write_and_read):
    volume = make_volume(OBLIQUE["oblique"])
    labels = make_labels()
    model = write_and_read(write_seg(volume, labels, SEGMENTS, type_id="liver", algorithm=MODEL))
    reviewed = write_and_read(write_seg(volume, labels, SEGMENTS, type_id="liver", content_creator="REVIEWER^ANNA",
                                        referenced_seg=model))
    sr = write_and_read(write_sr(reviewed, volume))
    assert read_sr(sr) == pytest.approx(expected_volumes(labels, volume))
