"""DICOM SEG writing and reading: round trips, conventions, validity, refusals."""

from __future__ import annotations

import random
from datetime import datetime

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medimg_kernel.anatomy import CATALOGUE, get_segment_type
from medimg_kernel.errors import SegmentationError, UnknownSegmentTypeError
from medimg_kernel.seg import (
    AlgorithmIdentification,
    describe_seg,
    read_seg,
    read_seg_masks,
    write_seg,
)
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import AXIAL_DIRECTION, Volume

SEGMENTS = ["liver", "spleen", "kidney"]
SHAPE = (12, 20, 24)
MODEL = AlgorithmIdentification(name="liver-unet", version="3")


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def make_volume(direction: np.ndarray | None = None, *, shuffle: bool = True, seed: int = 0) -> Volume:
    """A small synthetic CT volume whose ``sources`` are its CT headers (shuffled by default)."""
    direction = AXIAL_DIRECTION if direction is None else direction
    grid = Volume(np.zeros(SHAPE, np.float32), (2.5, 0.7, 0.8), origin=(-10.0, 20.0, -30.5), direction=direction)
    patient = SyntheticPatient("SYN-001", "PHANTOM^SEG", generate_uid())
    datasets = ct_series_from_volume(grid, patient)
    for ds in datasets:
        del ds.PixelData
    sources = list(datasets)
    if shuffle:
        random.Random(seed).shuffle(sources)
    first = datasets[0]
    return Volume(
        grid.array, grid.spacing, grid.origin, grid.direction, sources=tuple(sources),
        study_instance_uid=first.StudyInstanceUID, series_instance_uid=first.SeriesInstanceUID,
        frame_of_reference_uid=first.FrameOfReferenceUID, modality="CT",
    )


def make_labels(*, absent: str | None = "spleen") -> np.ndarray:
    """Asymmetric label map with empty slices (0-1 and 10-11); ``absent`` segment left out."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:8, 3:12, 2:15] = 1
    labels[4:6, 14:18, 16:22] = 2
    labels[6:10, 1:4, 18:23] = 3
    labels[3, 5, 20] = 3  # a lone voxel off-centre catches x/y flips
    if absent is not None:
        labels[labels == SEGMENTS.index(absent) + 1] = 0
    return labels


OBLIQUE = {
    "axial": AXIAL_DIRECTION,
    "oblique": rotation((1, 2, 0.5), 23),
    "oblique-left-handed": np.diag([-1.0, 1.0, 1.0]) @ rotation((0.3, -1, 2), 31),
}


@pytest.mark.parametrize("geometry", list(OBLIQUE))
def test_round_trip_is_exact_whatever_the_source_order(geometry, write_and_read, assert_valid_dicom):
    volume = make_volume(OBLIQUE[geometry])
    labels = make_labels()
    seg = write_seg(volume, labels, SEGMENTS, type_id="abdomen", algorithm=MODEL)
    assert_valid_dicom(seg)
    back = write_and_read(seg)
    read = read_seg(back, volume)
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, labels)
    # Empty slices are omitted: 6 liver + 5 kidney frames, no spleen frame.
    assert back.NumberOfFrames == 6 + 5
    # Read with a differently ordered copy of the same series: same result.
    reordered = make_volume(OBLIQUE[geometry], shuffle=False)
    reordered = Volume(volume.array, volume.spacing, volume.origin, volume.direction,
                       sources=tuple(reversed(volume.sources)), series_instance_uid=volume.series_instance_uid,
                       frame_of_reference_uid=volume.frame_of_reference_uid)
    np.testing.assert_array_equal(read_seg(back, reordered), labels)


def test_frames_reference_the_slice_at_their_position():
    volume = make_volume(OBLIQUE["oblique"])
    seg = write_seg(volume, make_labels(absent=None), SEGMENTS, type_id="abdomen")
    position_of = {ds.SOPInstanceUID: np.array(ds.ImagePositionPatient, float) for ds in volume.sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient, position_of[uid], atol=1e-3)


def test_overlapping_masks_round_trip(write_and_read, assert_valid_dicom):
    volume = make_volume()
    masks = np.zeros((3, *SHAPE), bool)
    masks[0, 2:9, 3:12, 2:15] = True
    masks[1, 5:7, 8:14, 10:20] = True  # overlaps the liver
    masks[2, 8:10, 1:4, 18:23] = True
    seg = write_seg(volume, masks, SEGMENTS, type_id="abdomen", algorithm=MODEL)
    assert seg.SegmentsOverlap in ("YES", "UNDEFINED")
    assert_valid_dicom(seg)
    back = write_and_read(seg)
    read, names = read_seg_masks(back, volume)
    assert names == tuple(SEGMENTS)
    np.testing.assert_array_equal(read, masks)
    with pytest.raises(SegmentationError, match="overlapping"):
        read_seg(back, volume)


def test_labelmap_type_round_trip(write_and_read):
    # LABELMAP (Label Map Segmentation Storage, 2024) is unknown to the installed 2022 dciodvfy
    # ("Information Object Not found"), so it is not checked with it; BINARY is the default.
    volume = make_volume(OBLIQUE["oblique"])
    labels = make_labels()
    seg = write_seg(volume, labels, SEGMENTS, type_id="abdomen", segmentation_type="LABELMAP")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    np.testing.assert_array_equal(read_seg(write_and_read(seg), volume), labels)


def test_all_empty_labels_round_trip(write_and_read):
    volume = make_volume()
    labels = np.zeros(SHAPE, np.uint8)
    back = write_and_read(write_seg(volume, labels, ["liver"], type_id="liver"))
    np.testing.assert_array_equal(read_seg(back, volume), labels)


def test_model_seg_conventions(write_and_read):
    volume = make_volume()
    created = datetime(2026, 3, 4, 5, 6, 7)
    seg = write_and_read(write_seg(volume, make_labels(), SEGMENTS, type_id="liver", algorithm=MODEL,
                                   content_datetime=created, series_number=300))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == "model_liver"
    assert seg.ContentLabel == "MODEL_LIVER"
    assert (seg.ContentDate, seg.ContentTime[:6]) == ("20260304", "050607")
    assert seg.SeriesNumber == 300
    assert seg.StudyInstanceUID == volume.study_instance_uid
    for item in seg.SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("liver-unet", "3")
    info = describe_seg(seg)
    assert info.is_model and info.type_id == "liver" and info.algorithm == MODEL
    assert info.content_datetime == created and info.content_creator is None
    assert info.source_series_instance_uids == (volume.series_instance_uid,)


def test_reviewed_seg_references_the_model_seg(write_and_read, assert_valid_dicom):
    volume = make_volume()
    model = write_and_read(write_seg(volume, make_labels(), SEGMENTS, type_id="liver", algorithm=MODEL))
    corrected = make_labels(absent=None)
    reviewed = write_seg(volume, corrected, SEGMENTS, type_id="liver", content_creator="REVIEWER^ANNA",
                         referenced_seg=model)
    assert_valid_dicom(reviewed)
    reviewed = write_and_read(reviewed)
    assert reviewed.SeriesDescription == "liver" and reviewed.ContentLabel == "LIVER"
    assert str(reviewed.ContentCreatorName) == "REVIEWER^ANNA"
    assert {item.SegmentAlgorithmType for item in reviewed.SegmentSequence} == {"MANUAL"}
    info = describe_seg(reviewed)
    assert not info.is_model and info.algorithm is None and info.content_creator == "REVIEWER^ANNA"
    assert info.referenced_segs == ((model.SeriesInstanceUID, model.SOPInstanceUID),)
    assert model.SOPInstanceUID in {item.ReferencedSOPInstanceUID for item in reviewed.SourceImageSequence}
    np.testing.assert_array_equal(read_seg(reviewed, volume), corrected)


def test_segment_codes_and_colours_come_from_the_catalogue(write_and_read):
    volume = make_volume()
    seg = write_and_read(write_seg(volume, make_labels(), SEGMENTS, type_id="abdomen"))
    expected = {"liver": "10200004", "spleen": "78961009", "kidney": "64033007"}
    for number, item in enumerate(seg.SegmentSequence, start=1):
        name = SEGMENTS[number - 1]
        assert item.SegmentNumber == number and item.SegmentLabel == name
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.SCT.AnatomicalStructure.value
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == expected[name]
        assert len(item.RecommendedDisplayCIELabValue) == 3
    kidney = seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0]
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == codes.SCT.RightAndLeft.value
    assert describe_seg(seg).segment_names == tuple(SEGMENTS)


def test_catalogue_codes_match_pydicom_dictionary():
    assert get_segment_type("Liver").property_type == codes.SCT.Liver
    assert get_segment_type("spleen").property_type == codes.SCT.Spleen
    assert get_segment_type("kidney").property_type == codes.SCT.Kidney
    assert len({entry.label_value for entry in CATALOGUE.values()}) == len(CATALOGUE)
    with pytest.raises(UnknownSegmentTypeError, match="knows aorta, bone, cyst") as error:
        get_segment_type("pancreatic duct")
    assert isinstance(error.value, LookupError) and isinstance(error.value, SegmentationError)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(labels=np.zeros((12, 20, 23), np.uint8)), "labels shape"),
        (dict(labels=np.full(SHAPE, 4, np.uint8)), "only 0 .background. and 1..3"),
        (dict(labels=np.full(SHAPE, -1, np.int16)), "values -1..-1"),
        (dict(labels=np.zeros(SHAPE, np.float32)), "integer label map"),
        (dict(labels=np.zeros((2, *SHAPE), bool)), "mask stack shape"),
        (dict(segments=["liver", "pancreatic duct", "kidney"]), "unknown segment type 'pancreatic duct'"),
        (dict(segments=["liver", "liver", "kidney"]), "liver more than once"),
        (dict(segments=[]), "non-empty list"),
        (dict(type_id="model_liver"), "pass the bare type id"),
        (dict(type_id="liver ct"), "type_id must be"),
        (dict(content_creator="A\\B"), "content_creator"),
        (dict(segmentation_type="FRACTIONAL"), "segmentation_type"),
    ],
)
def test_bad_input_is_refused(change, message):
    volume = make_volume()
    arguments = dict(labels=make_labels(), segments=SEGMENTS, type_id="liver", content_creator=None,
                     segmentation_type="BINARY")
    arguments.update(change)
    with pytest.raises(SegmentationError, match=message):
        write_seg(volume, arguments.pop("labels"), arguments.pop("segments"), **arguments)


def test_volume_without_sources_or_with_foreign_geometry_is_refused():
    volume = make_volume()
    with pytest.raises(SegmentationError, match="no source instances"):
        write_seg(Volume(volume.array, volume.spacing), make_labels(), SEGMENTS, type_id="liver")
    shifted = Volume(volume.array, volume.spacing, (0.0, 0.0, 0.0), volume.direction, sources=volume.sources)
    with pytest.raises(SegmentationError, match="do not share a geometry"):
        write_seg(shifted, make_labels(), SEGMENTS, type_id="liver")
    rotated = Volume(volume.array, volume.spacing, volume.origin, OBLIQUE["oblique"], sources=volume.sources)
    with pytest.raises(SegmentationError, match="ImageOrientationPatient"):
        write_seg(rotated, make_labels(), SEGMENTS, type_id="liver")
    with pytest.raises(SegmentationError, match="must be a SEG"):
        write_seg(volume, make_labels(), SEGMENTS, type_id="liver", referenced_seg=volume.sources[0])


def test_reading_against_another_series_or_grid_is_refused(write_and_read):
    volume = make_volume()
    seg = write_and_read(write_seg(volume, make_labels(), SEGMENTS, type_id="liver"))
    other = make_volume(seed=1)  # same geometry, other series and UIDs
    with pytest.raises(SegmentationError, match="another frame of reference"):
        read_seg(seg, other)
    same_frame = Volume(other.array, other.spacing, other.origin, other.direction, sources=other.sources,
                        series_instance_uid=other.series_instance_uid,
                        frame_of_reference_uid=volume.frame_of_reference_uid)
    with pytest.raises(SegmentationError, match="does not reference series"):
        read_seg(seg, same_frame)
    anonymous = Volume(other.array, other.spacing, other.origin, other.direction, sources=other.sources)
    with pytest.raises(SegmentationError, match="not a slice of series"):
        read_seg(seg, anonymous)
    shifted = Volume(volume.array, volume.spacing, (0.0, 0.0, 0.0), volume.direction,
                     series_instance_uid=volume.series_instance_uid)
    with pytest.raises(SegmentationError, match="do not share a geometry|outside the volume"):
        read_seg(seg, shifted)
    with pytest.raises(SegmentationError, match="not a Segmentation"):
        read_seg(pydicom.Dataset(volume.sources[0]), volume)


def test_read_by_position_when_volume_has_no_sources(write_and_read):
    volume = make_volume(OBLIQUE["oblique"])
    labels = make_labels()
    seg = write_and_read(write_seg(volume, labels, SEGMENTS, type_id="liver"))
    bare = Volume(volume.array, volume.spacing, volume.origin, volume.direction,
                  series_instance_uid=volume.series_instance_uid)
    np.testing.assert_array_equal(read_seg(seg, bare), labels)


def test_preencoded_frame_groups_write_the_same_bytes(monkeypatch, tmp_path):
    """write_seg stores the per-frame functional groups pre-encoded: save_as must write exactly the
    bytes pydicom writes for highdicom's sequence, and the dataset must read the same."""
    import copy

    from medimg_kernel.seg import frame_groups, sop

    volume, labels = make_volume(), make_labels(absent=None)
    monkeypatch.setattr(sop.frame_groups, "preencode_frame_groups", lambda seg: False)
    plain = write_seg(volume, labels, SEGMENTS, type_id="abdomen", algorithm=MODEL)
    monkeypatch.undo()
    fast = copy.deepcopy(plain)
    assert frame_groups.preencode_frame_groups(fast)
    assert fast.get_item(0x52009230).is_raw
    plain.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    fast.save_as(tmp_path / "fast.dcm", enforce_file_format=True)
    assert (tmp_path / "plain.dcm").read_bytes() == (tmp_path / "fast.dcm").read_bytes()
    assert [item.to_json_dict() for item in fast.PerFrameFunctionalGroupsSequence] == \
        [item.to_json_dict() for item in plain.PerFrameFunctionalGroupsSequence]
    assert np.array_equal(read_seg(fast, volume), labels)
    # another transfer syntax re-encodes everything, as before
    fast.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    fast.save_as(tmp_path / "implicit.dcm", enforce_file_format=True)
    assert np.array_equal(read_seg(pydicom.dcmread(tmp_path / "implicit.dcm"), volume), labels)


def test_write_seg_output_is_preencoded_and_valid(write_and_read, assert_valid_dicom):
    volume, labels = make_volume(), make_labels(absent=None)
    seg = write_seg(volume, labels, SEGMENTS, type_id="abdomen", algorithm=MODEL)
    assert seg.get_item(0x52009230).is_raw
    assert np.array_equal(read_seg(seg, volume), labels)  # in memory, decoded on access
    assert np.array_equal(read_seg(write_and_read(seg), volume), labels)
    assert_valid_dicom(seg)
