"""RT Structure Sets in and out (issue #14 item 6): masks → contours → masks voxel for voxel (holes,
islands, diagonal contacts, oblique and left-handed series); contours on voxel borders where the
geometry says; hand-drawn contours (and pydicom's own rtstruct.dcm) rasterised by the even-odd rule;
dciodvfy and dcmdump on what we write; bad input refused by name."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import medimg_kernel as mk
from medimg_kernel.anatomy import ABNORMAL_STRUCTURE, SegmentType, get_segment_type
from medimg_kernel.errors import RTStructError, SegmentationError
from medimg_kernel.rtstruct import StructureSet, read_rtstruct, write_rtstruct
from medimg_kernel.series import read_series
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import AXIAL_DIRECTION, Volume

from .test_segmentation import OBLIQUE, SHAPE, make_volume

TUMOUR = SegmentType("liver tumour", 0, ABNORMAL_STRUCTURE, codes.SCT.Neoplasm, None, (250, 20, 160),
                     anatomic_region=codes.SCT.Liver)


def make_masks() -> np.ndarray:
    """Three overlapping ROIs on SHAPE: a block with a hole holding an island, a second island and a
    diagonal contact on slice 4; a lone voxel off-centre (catches x/y flips); a finding."""
    masks = np.zeros((3, *SHAPE), bool)
    masks[0, 2:8, 3:14, 2:15] = True
    masks[0, 4, 6:10, 5:10] = False  # a hole ...
    masks[0, 4, 7:9, 7] = True  # ... with an island in it
    masks[0, 4, 16:19, 2:6] = True  # a second island on the same slice
    masks[0, 4, 15, 6] = True  # touches that island only at a corner
    masks[1, 6:10, 1:4, 18:23] = True
    masks[1, 3, 5, 20] = True
    masks[2, 5:7, 8:12, 10:13] = True  # overlaps ROI 0
    return masks


SEGMENTS = ["liver", get_segment_type("kidney"), TUMOUR]


def sorted_slices(volume: Volume) -> list[Dataset]:
    return sorted(volume.sources, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float),
                                                             volume.direction[0])))


def contour_points(contour: Dataset) -> np.ndarray:
    return np.asarray(contour.ContourData, float).reshape(-1, 3)


@pytest.mark.parametrize("geometry", list(OBLIQUE))
def test_write_read_round_trip_is_voxel_exact(geometry, write_and_read, assert_valid_dicom):
    volume = make_volume(OBLIQUE[geometry])
    masks = make_masks()

    written = write_rtstruct(volume, masks, SEGMENTS, content_creator="DOE^JANE")
    assert_valid_dicom(written)
    ds = write_and_read(written)
    result = read_rtstruct(ds, volume)

    assert isinstance(result, StructureSet)
    assert result.masks.shape == masks.shape and result.masks.dtype == bool
    np.testing.assert_array_equal(result.masks, masks)
    assert result.names == ("liver", "kidney", "liver tumour")
    assert [roi.rgb for roi in result.rois] == [(221, 130, 101), (66, 160, 200), (250, 20, 160)]
    assert [roi.interpreted_type for roi in result.rois] == ["ORGAN", "ORGAN", ""]
    assert result.segments[0] == get_segment_type("liver")
    assert result.segments[1] == get_segment_type("kidney")  # with its laterality modifier
    tumour = result.segments[2]  # the registry's entry for its codes (as read_seg_types does), its colour kept
    assert (tumour.name, tumour.property_category, tumour.property_type, tumour.rgb) == \
        ("neoplasm", ABNORMAL_STRUCTURE, codes.SCT.Neoplasm, (250, 20, 160))
    assert result.skipped == ()
    # slice 4 of ROI 0: outer boundary, hole, island in the hole, second island (with its corner
    # neighbour: 4-connected loops, so separate): five contours, all referencing slice 4's CT image
    on_slice_4 = [c for c in ds.ROIContourSequence[0].ContourSequence
                  if c.ContourImageSequence[0].ReferencedSOPInstanceUID == sorted_slices(volume)[4].SOPInstanceUID]
    assert len(on_slice_4) == 5
    heights = {round(float(np.mean(contour_points(c) @ volume.direction[0])), 3) for c in on_slice_4}
    assert heights == {round(float(volume.index_to_lps((4, 0, 0)) @ volume.direction[0]), 3)}


def test_a_label_map_writes_as_its_masks():
    volume = make_volume()
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 3:9, 4:12] = 1
    labels[7:9, 10:15, 15:20] = 2
    result = read_rtstruct(write_rtstruct(volume, labels, ["liver", "spleen"]), volume)
    np.testing.assert_array_equal(result.masks, np.stack([labels == 1, labels == 2]))


def test_contours_run_along_voxel_borders_in_lps():
    volume = make_volume(OBLIQUE["oblique"])
    masks = np.zeros((1, *SHAPE), bool)
    masks[0, 3, 5, 7] = True
    ds = write_rtstruct(volume, masks, ["liver"])
    (contour,) = ds.ROIContourSequence[0].ContourSequence
    corners = volume.index_to_lps([(3, 5 + dy, 7 + dx) for dy, dx in ((-.5, -.5), (-.5, .5), (.5, .5), (.5, -.5))])
    points = contour_points(contour)
    assert contour.ContourGeometricType == "CLOSED_PLANAR" and int(contour.NumberOfContourPoints) == 4
    assert sorted(map(tuple, np.round(points, 3))) == sorted(map(tuple, np.round(corners, 3)))
    slice_3 = sorted_slices(volume)[3]
    assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID == slice_3.SOPInstanceUID
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == volume.frame_of_reference_uid == ds.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == volume.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == \
        [s.SOPInstanceUID for s in sorted_slices(volume)]
    assert (ds.PatientID, ds.StudyInstanceUID) == (slice_3.PatientID, slice_3.StudyInstanceUID)
    assert ds.Modality == "RTSTRUCT" and ds.SeriesInstanceUID != volume.series_instance_uid


def hand_drawn(volume: Volume, polygons: dict[int, list[list[tuple[float, float]]]], *,
               name: str = "drawn") -> Dataset:
    """An RT Structure Set with one ROI whose contours are given in (row, column) index coordinates
    per slice, on ``volume``'s references (built from ours, its contours replaced)."""
    ds = write_rtstruct(volume, np.ones((1, *SHAPE), bool), ["liver"])
    ds.StructureSetROISequence[0].ROIName = name
    slices = sorted_slices(volume)
    contours = []
    for k, loops in polygons.items():
        for loop in loops:
            contour = Dataset()
            image = Dataset()
            image.ReferencedSOPClassUID = slices[k].SOPClassUID
            image.ReferencedSOPInstanceUID = slices[k].SOPInstanceUID
            contour.ContourImageSequence = [image]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(loop)
            contour.ContourData = [f"{v:.4f}" for v in volume.index_to_lps([(k, j, i) for j, i in loop]).ravel()]
            contours.append(contour)
    ds.ROIContourSequence[0].ContourSequence = contours
    return ds


def test_hand_drawn_contours_fill_by_the_even_odd_rule_edges_included():
    volume = make_volume(OBLIQUE["oblique-left-handed"])
    outer = [(2, 3), (2, 12), (14, 12), (14, 3)]  # through voxel centres: its border rows and columns are in
    hole = [(5.5, 5.5), (5.5, 9.5), (9.5, 9.5), (9.5, 5.5)]  # between centres
    island = [(6.6, 6.6), (6.6, 8.4), (8.4, 8.4), (8.4, 6.6)]  # inside the hole, around voxel (7..8, 7..8)
    triangle = [(16, 14), (19, 14), (16, 20)]  # a slanted edge through centres (16,20), (17,18), (18,16)
    result = read_rtstruct(hand_drawn(volume, {2: [outer, hole, island], 9: [triangle]}), volume)

    expected = np.zeros(SHAPE, bool)
    expected[2, 2:15, 3:13] = True
    expected[2, 6:10, 6:10] = False
    expected[2, 7:9, 7:9] = True
    for j in range(16, 20):
        expected[9, j, 14:21 - 2 * (j - 16)] = True
    np.testing.assert_array_equal(result.masks[0], expected)
    assert result.names == ("drawn",)


def pydicom_series(rtstruct: Dataset, *, series_instance_uid: str | None = None) -> Volume:
    """A synthetic CT series on the geometry pydicom's rtstruct.dcm implies (axial contours at z = -200,
    -190, -180 mm, x within ±200, y within ±150 mm): 5 mm pixels, 10 mm slices, on its Frame of
    Reference and (by default) the series it references."""
    frame = rtstruct.ReferencedFrameOfReferenceSequence[0]
    referenced = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
    grid = Volume(np.zeros((3, 65, 85), np.float32), (10.0, 5.0, 5.0), (-210.0, -160.0, -200.0), AXIAL_DIRECTION)
    patient = SyntheticPatient("SYN-RT", "PHANTOM^RT", generate_uid())
    datasets = ct_series_from_volume(grid, patient, series_instance_uid=series_instance_uid or referenced,
                                     frame_of_reference_uid=frame.FrameOfReferenceUID)
    return read_series(datasets)


@pytest.fixture(scope="module")
def pydicom_rtstruct() -> Dataset:
    return pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)  # no file meta: force


def test_pydicoms_rtstruct_reads_onto_its_series(pydicom_rtstruct):
    volume = pydicom_series(pydicom_rtstruct)
    result = read_rtstruct(pydicom_rtstruct, volume)

    assert result.names == ("patient",)
    assert result.skipped == (("Isocenter 1", "POINT contours only"), ("Isocenter 2", "POINT contours only"))
    (patient,) = result.rois
    assert (patient.rgb, patient.interpreted_type, patient.generation_algorithm) == ((220, 160, 120), "EXTERNAL",
                                                                                       "MANUAL")
    assert patient.segment == "patient"  # no codes: the ROI name
    expected = np.zeros(volume.shape, bool)
    expected[:, 2:63, 2:83] = True  # voxel centres x = -200..200, y = -150..150 mm: borders included
    np.testing.assert_array_equal(result.masks[0], expected)


def test_pydicoms_rtstruct_is_refused_on_another_series(pydicom_rtstruct):
    volume = pydicom_series(pydicom_rtstruct, series_instance_uid=generate_uid())
    with pytest.raises(RTStructError, match=r"RT Structure Set 1\.2\.826\.0\.1\.3680043\.8\.498\.2010020400001: "
                                            r"it references series 1\.2\.826\.0\.1\.3680043\.8\.498\.2010020400001"
                                            r"\.2\.1\.1, the volume is series .*read the series it was drawn on"):
        read_rtstruct(pydicom_rtstruct, volume)


def test_an_roi_without_closed_contours_is_refused_by_name(pydicom_rtstruct):
    volume = pydicom_series(pydicom_rtstruct)
    with pytest.raises(RTStructError, match="ROI 'Isocenter 1': the ROI has POINT contours only") as caught:
        read_rtstruct(pydicom_rtstruct, volume, rois=["patient", "Isocenter 1"])
    assert caught.value.roi == "Isocenter 1"
    with pytest.raises(RTStructError, match=r"ROI 'prostate': no ROI of that name; the structure set has "
                                            r"\['Isocenter 1', 'Isocenter 2', 'patient'\]"):
        read_rtstruct(pydicom_rtstruct, volume, rois=["prostate"])


def test_written_rtstruct_is_read_by_dcmtk(tmp_path):
    volume = make_volume()
    path = tmp_path / "rtstruct.dcm"
    write_rtstruct(volume, make_masks(), SEGMENTS).save_as(path, enforce_file_format=True)
    dump = subprocess.run(["dcmdump", "+P", "3006,0026", "+P", "3006,0042", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "[liver tumour]" in dump.stdout and "CLOSED_PLANAR" in dump.stdout
    full = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, timeout=60)
    assert full.returncode == 0 and "RTStructureSetStorage" in full.stdout and "E:" not in full.stderr


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def volume_and_rtstruct() -> tuple[Volume, Dataset]:
    volume = make_volume()
    return volume, write_rtstruct(volume, make_masks(), SEGMENTS)


def test_a_contour_off_the_slices_is_refused_naming_roi_and_position(volume_and_rtstruct):
    volume, ds = volume_and_rtstruct
    contour = ds.ROIContourSequence[1].ContourSequence[0]
    points = contour_points(contour)
    points += 0.4 * volume.spacing[0] * volume.direction[0]  # 1 mm off its slice (2.5 mm spacing)
    contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    height = float(np.mean(contour_points(contour) @ volume.direction[0]))
    with pytest.raises(RTStructError, match=rf"ROI 'kidney': contour 1 lies at {height:.3f} mm along the slice "
                                            r"normal, not on a slice of the volume") as caught:
        read_rtstruct(ds, volume)
    assert caught.value.roi == "kidney" and caught.value.sop_instance_uid == ds.SOPInstanceUID


def test_a_contour_beyond_the_last_slice_or_not_planar_is_refused(volume_and_rtstruct):
    volume, ds = volume_and_rtstruct
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    original = contour_points(contour)
    contour.ContourData = [f"{v:.4f}" for v in (original + 20 * volume.spacing[0] * volume.direction[0]).ravel()]
    with pytest.raises(RTStructError, match="ROI 'liver': contour 1 lies at .* not on a slice"):
        read_rtstruct(ds, volume)
    tilted = original.copy()
    tilted[0] += 1.0 * volume.direction[0]
    contour.ContourData = [f"{v:.4f}" for v in tilted.ravel()]
    with pytest.raises(RTStructError, match="ROI 'liver': contour 1 is not in a slice plane"):
        read_rtstruct(ds, volume)


def test_a_contour_referencing_another_image_is_refused(volume_and_rtstruct):
    volume, ds = volume_and_rtstruct
    ds.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"
    with pytest.raises(RTStructError, match=r"ROI 'liver': contour 1 lies on slice 2 .* references image 1\.2\.3\.4"):
        read_rtstruct(ds, volume)


def test_another_frame_of_reference_is_refused(volume_and_rtstruct):
    volume, ds = volume_and_rtstruct
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.999"
    with pytest.raises(RTStructError, match=r"it references Frame of Reference 1\.2\.3\.999, the volume .* is on "
                                            + volume.frame_of_reference_uid.replace(".", r"\.")):
        read_rtstruct(ds, volume)
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = volume.frame_of_reference_uid
    ds.StructureSetROISequence[2].ReferencedFrameOfReferenceUID = "1.2.3.999"
    with pytest.raises(RTStructError, match=r"ROI 'liver tumour': the ROI is on Frame of Reference 1\.2\.3\.999"):
        read_rtstruct(ds, volume)


def test_a_volume_of_another_series_or_without_sources_is_refused(volume_and_rtstruct):
    volume, ds = volume_and_rtstruct
    other = make_volume(seed=1)  # another series and frame of reference, same grid
    with pytest.raises(RTStructError, match="references Frame of Reference"):
        read_rtstruct(ds, other)
    bare = Volume(volume.array, volume.spacing, volume.origin, volume.direction,
                  frame_of_reference_uid=volume.frame_of_reference_uid)
    with pytest.raises(RTStructError, match="the volume has no source instances"):
        read_rtstruct(ds, bare)
    with pytest.raises(RTStructError, match="the volume has no source instances"):
        write_rtstruct(bare, make_masks(), SEGMENTS)


def test_a_dataset_that_is_not_an_rtstruct_is_refused(volume_and_rtstruct):
    volume, _ = volume_and_rtstruct
    ct = volume.sources[0]
    with pytest.raises(RTStructError, match=rf"RT Structure Set {ct.SOPInstanceUID}: not an RT Structure Set "
                                            r"\(SOP Class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2, Modality CT\)"):
        read_rtstruct(ct, volume)
    seg = mk.write_seg(volume, make_masks()[0].astype(np.uint8), ["liver"], type_id="liver")
    with pytest.raises(RTStructError, match="not an RT Structure Set .*Modality SEG.*read_seg"):
        read_rtstruct(seg, volume)


def test_an_empty_mask_is_refused_and_nothing_is_written():
    volume = make_volume()
    masks = make_masks()
    masks[1] = False
    with pytest.raises(RTStructError, match=r"RT Structure Set <new>, ROI 'kidney': the mask is empty") as caught:
        write_rtstruct(volume, masks, SEGMENTS)
    assert isinstance(caught.value, SegmentationError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("masks, segments, message", [
    (np.zeros((2, 3, 4, 5), bool), ["liver", "spleen"], r"masks of shape \(2, 3, 4, 5\)"),
    (np.full(SHAPE, 3, np.uint8), ["liver", "spleen"], r"label values 3\.\.3 do not fit 2 segments"),
    (np.ones((2, *SHAPE), bool), ["liver", "liver"], r"segments \['liver', 'liver'\] must be at least one, each once"),
])
def test_masks_that_do_not_fit_are_refused(masks, segments, message):
    with pytest.raises(RTStructError, match=message):
        write_rtstruct(make_volume(), masks, segments)
