"""Any coded structure (issue #14 item 4): segments are coded concepts from a registry that code and
settings extend; SEGs with any codes are written and read with their codes preserved, by us and by
dcmqi (our SEG → dcmqi's reader, dcmqi's SEG → ours); LABELMAP where segments don't overlap."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medimg_kernel import anatomy
from medimg_kernel.anatomy import CATALOGUE, SegmentType, get_segment_type, load_segment_types, register_segment_type
from medimg_kernel.errors import SegmentationError, UnknownSegmentTypeError
from medimg_kernel.seg import describe_seg, read_seg, read_seg_types, write_seg
from medimg_kernel.sr import write_sr

from .test_segmentation import SHAPE, make_volume

LIVER_TUMOUR = SegmentType("liver tumour", 0, anatomy.ABNORMAL_STRUCTURE, codes.SCT.Neoplasm, None, (250, 20, 160),
                           anatomic_region=codes.SCT.Liver)


def lesion_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:8, 3:12, 2:15] = 1   # the tumour
    labels[4:6, 14:18, 16:22] = 2  # nodule 1
    labels[8:10, 1:4, 18:23] = 3   # nodule 2
    return labels


def segments() -> list[SegmentType]:
    nodule = get_segment_type("nodule")
    return [LIVER_TUMOUR, nodule.with_tracking("nodule 1"), nodule.with_tracking("nodule 2")]


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_any_coded_structure_round_trips_with_its_codes(kind, write_and_read, assert_valid_dicom):
    volume, labels = make_volume(), lesion_labels()
    seg = write_and_read(write_seg(volume, labels, segments(), type_id="lesions", segmentation_type=kind))
    if kind == "BINARY":
        assert_valid_dicom(seg)  # the installed dciodvfy (2022) does not know Label Map Segmentation Storage
    assert np.array_equal(read_seg(seg, volume), labels)
    tumour, first, second = read_seg_types(seg)
    assert (tumour.property_category.value, tumour.property_type.value) == ("49755003", "108369006")
    assert tumour.anatomic_region is not None and tumour.anatomic_region.value == codes.SCT.Liver.value
    # the registry's "neoplasm" (same codes), with this SEG's own region and colour
    assert (tumour.name, tumour.label_value, tumour.rgb) == ("neoplasm", CATALOGUE["neoplasm"].label_value, (250, 20, 160))
    assert first.name == second.name == "nodule" and first.label_value == CATALOGUE["nodule"].label_value
    assert (first.tracking_id, second.tracking_id) == ("nodule 1", "nodule 2")
    assert first.tracking_uid and first.tracking_uid != second.tracking_uid
    assert describe_seg(seg).segment_names == ("neoplasm", "nodule", "nodule")


def test_a_report_names_each_finding_its_site_and_its_tracking(write_and_read, assert_valid_dicom):
    volume = make_volume()
    seg = write_and_read(write_seg(volume, lesion_labels(), segments(), type_id="lesions"))
    sr = write_and_read(write_sr(seg, volume))
    assert_valid_dicom(sr)
    text = str(sr)
    assert "Finding Site" in text and "Liver" in text and "nodule 2" in text
    for item in read_seg_types(seg)[1:]:
        assert str(item.tracking_uid) in text  # the report tracks the same finding as the SEG


def _dcmqi(name: str) -> str:
    import dcmqi

    return str(Path(dcmqi.__file__).parent / "bin" / name)


def test_dcmqi_reads_our_seg_with_its_codes(tmp_path, write_and_read):
    volume = make_volume()
    seg = write_seg(volume, lesion_labels(), segments(), type_id="lesions")
    seg.save_as(tmp_path / "ours.dcm", enforce_file_format=True)
    out = tmp_path / "dcmqi"
    out.mkdir()
    subprocess.run([_dcmqi("segimage2itkimage"), "--inputDICOM", str(tmp_path / "ours.dcm"), "--outputDirectory", str(out),
                    "--prefix", "x"], check=True, capture_output=True, timeout=120)
    meta = json.loads((out / "x-meta.json").read_text())
    read = [a for group in meta["segmentAttributes"] for a in group]
    types = sorted((a["SegmentedPropertyTypeCodeSequence"]["CodeValue"], a.get("TrackingIdentifier", "")) for a in read)
    assert types == [("108369006", ""), ("27925004", "nodule 1"), ("27925004", "nodule 2")]
    tumour = next(a for a in read if a["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == "108369006")
    assert tumour["AnatomicRegionSequence"]["CodeValue"] == codes.SCT.Liver.value


def test_we_read_a_seg_dcmqi_wrote_with_codes_we_do_not_know(tmp_path):
    import SimpleITK as sitk

    volume = make_volume(shuffle=False)
    ct = tmp_path / "ct"
    ct.mkdir()
    for i, ds in enumerate(volume.sources):
        ds = ds.copy()
        ds.PixelData = np.zeros(SHAPE[1:], np.int16).tobytes()
        ds.save_as(ct / f"{i:03d}.dcm", enforce_file_format=True)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:7, 4:10, 5:12] = 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(tuple(reversed(volume.spacing)))
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(np.stack([volume.direction[2], volume.direction[1], volume.direction[0]], axis=1).ravel()))
    sitk.WriteImage(image, str(tmp_path / "labels.nrrd"))
    vessel_wall = {"CodeValue": "12345678", "CodingSchemeDesignator": "99LOCAL", "CodeMeaning": "Graft patency"}
    meta = {"ContentCreatorName": "OTHER^TOOL", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
            "SeriesDescription": "graft", "SeriesNumber": "300", "InstanceNumber": "1", "BodyPartExamined": "ABDOMEN",
            "segmentAttributes": [[{
                "labelID": 1, "SegmentLabel": "Graft", "SegmentAlgorithmType": "MANUAL",
                "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT",
                                                          "CodeMeaning": "Tissue"},
                "SegmentedPropertyTypeCodeSequence": vessel_wall, "recommendedDisplayRGBValue": [10, 200, 30]}]]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    subprocess.run([_dcmqi("itkimage2segimage"), "--inputImageList", str(tmp_path / "labels.nrrd"),
                    "--inputDICOMDirectory", str(ct), "--outputDICOM", str(tmp_path / "theirs.dcm"),
                    "--inputMetadata", str(tmp_path / "meta.json")], check=True, capture_output=True, timeout=120)
    theirs = pydicom.dcmread(tmp_path / "theirs.dcm")
    assert np.array_equal(read_seg(theirs, volume), labels)
    (graft,) = read_seg_types(theirs)
    assert (graft.property_type.value, graft.property_type.scheme_designator) == ("12345678", "99LOCAL")
    assert graft.property_category.value == "85756007" and graft.name == "graft" and graft.label_value == 0


def test_the_registry_is_extended_by_code_and_by_settings(tmp_path, monkeypatch):
    saved = dict(CATALOGUE)
    try:
        with pytest.raises(UnknownSegmentTypeError, match="register_segment_type"):
            get_segment_type("adrenal gland")
        adrenal = register_segment_type(SegmentType("adrenal gland", 40, anatomy.ANATOMICAL_STRUCTURE,
                                                    codes.SCT.AdrenalGland, None, (249, 186, 150)))
        assert get_segment_type("Adrenal Gland") is adrenal
        with pytest.raises(SegmentationError, match="registered already"):
            register_segment_type(adrenal)
        with pytest.raises(SegmentationError, match="label value 1 is 'liver'"):
            register_segment_type(SegmentType("x", 1, anatomy.ANATOMICAL_STRUCTURE, codes.SCT.Colon, None, (1, 2, 3)))
        with pytest.raises(SegmentationError, match="has the codes of 'liver'"):
            register_segment_type(SegmentType("hepar", 41, anatomy.ANATOMICAL_STRUCTURE, codes.SCT.Liver, None, (1, 2, 3)))
        (tmp_path / "types.toml").write_text(
            '[[segment_types]]\nname = "ground glass opacity"\nlabel_value = 42\n'
            'category = "SCT:49755003:Morphologically Abnormal Structure"\ntype = "SCT:50427001:Ground glass opacity"\n'
            'region = "SCT:39607008:Lung"\nrgb = [120, 200, 90]\n')
        (loaded,) = load_segment_types(tmp_path / "types.toml")
        assert get_segment_type("ground glass opacity") == loaded and loaded.anatomic_region == Code("39607008", "SCT", "Lung")
        (tmp_path / "bad.toml").write_text('[[segment_types]]\nname = "odd"\ntype = "Nodule"\n')
        with pytest.raises(SegmentationError, match=r"number 1 \(odd\).*SCHEME:VALUE:Meaning"):
            load_segment_types(tmp_path / "bad.toml")
        assert "odd" not in CATALOGUE
    finally:
        CATALOGUE.clear()
        CATALOGUE.update(saved)


def test_every_registered_type_has_a_distinct_colour():
    labs = {name: hd.color.CIELabColor.from_rgb(*entry.rgb).lab for name, entry in CATALOGUE.items()}
    for (a, lab_a), (b, lab_b) in itertools.combinations(labs.items(), 2):
        delta_e = float(np.linalg.norm(np.subtract(lab_a, lab_b)))
        assert delta_e > 10, f"{a} and {b} look alike (ΔE {delta_e:.1f})"
    assert len({e.label_value for e in CATALOGUE.values()}) == len(CATALOGUE)
