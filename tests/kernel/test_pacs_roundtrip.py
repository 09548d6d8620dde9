"""The engineer's path end to end through a real Orthanc: a phantom study is stored,
found over QIDO, read as a Volume, segmented, and the SEG + SR stored, retrieved and read
back exactly; every object retrieved from the PACS passes dciodvfy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import medimg_kernel as mk
from medimg_kernel.phantom import DEFAULT_SITES, make_phantom
from medimg_kernel.sr import read_sr_report
from medimg_kernel.seg import AlgorithmIdentification, describe_seg
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from pydicom.uid import generate_uid

pytestmark = pytest.mark.integration

SEGMENTS = ["liver", "spleen", "kidney"]


@pytest.fixture(scope="module")
def stored_phantom(orthanc):
    """An oblique-site phantom (SITEC: tilted and rotated) stored in the PACS, with its truth."""
    profile = dataclasses.replace(DEFAULT_SITES[2], n_slices=60, matrix=(96, 96))
    ct, labels = make_phantom(profile, seed=7)
    patient = SyntheticPatient("RT001", "PHANTOM^RT001", generate_uid(entropy_srcs=["rt-study"]),
                               institution_name=profile.institution_name)
    datasets = ct_series_from_volume(ct, patient, uid_entropy=["rt"])
    orthanc.client().store_instances(datasets[::-1])  # stored out of order on purpose
    return ct, labels.array, datasets


def test_engineer_round_trip_through_the_pacs(orthanc, stored_phantom, assert_valid_dicom):
    ct, truth, datasets = stored_phantom
    client = orthanc.client()
    study = str(datasets[0].StudyInstanceUID)
    found = client.search_for_series(study, search_filters={"Modality": "CT"})
    series_uid = found[0]["0020000E"]["Value"][0]

    volume = mk.read_series(client, study, series_uid)
    assert np.array_equal(volume.array, ct.array)
    assert np.allclose(volume.affine, ct.affine, atol=1e-3)

    algorithm = AlgorithmIdentification(name="organ-segmentation", version="3")
    seg = mk.write_seg(volume, truth, SEGMENTS, type_id="organs", algorithm=algorithm)
    sr = mk.write_sr(seg, volume, truth)
    client.store_instances([seg, sr])

    seg_series = client.search_for_series(study, search_filters={"Modality": "SEG"})
    assert [s["0008103E"]["Value"][0] for s in seg_series] == ["model_organs"]
    seg_back = client.retrieve_series(study, str(seg.SeriesInstanceUID))
    sr_back = client.retrieve_series(study, str(sr.SeriesInstanceUID))
    assert len(seg_back) == 1 and len(sr_back) == 1
    assert_valid_dicom(seg_back[0])
    assert_valid_dicom(sr_back[0])

    assert np.array_equal(mk.read_seg(seg_back[0], volume), truth)
    info = describe_seg(seg_back[0])
    assert info.is_model and info.algorithm is not None
    report = read_sr_report(sr_back[0])
    voxel_mm3 = float(np.prod(volume.spacing))
    for index, name in enumerate(SEGMENTS, start=1):
        assert report.volumes_mm3[name] == pytest.approx((truth == index).sum() * voxel_mm3, rel=1e-6)
    assert report.segmentation_sop_instance_uid == str(seg.SOPInstanceUID)
    assert report.source_series_instance_uid == series_uid


def test_reviewed_seg_references_the_model_seg_through_the_pacs(orthanc, stored_phantom):
    ct, truth, datasets = stored_phantom
    client = orthanc.client()
    study, series_uid = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    volume = mk.read_series(client, study, series_uid)
    model = mk.write_seg(volume, truth, SEGMENTS, type_id="organs",
                         algorithm=AlgorithmIdentification(name="organ-segmentation", version="3"))
    corrected = truth.copy()
    corrected[corrected == 2] = 0  # the reviewer removed the spleen
    reviewed = mk.write_seg(volume, corrected, SEGMENTS, type_id="organs", content_creator="RESIDENT^DEMO",
                            referenced_seg=model)
    client.store_instances([model, reviewed])
    back = client.retrieve_series(study, str(reviewed.SeriesInstanceUID))[0]
    info = describe_seg(back)
    assert not info.is_model and str(back.ContentCreatorName) == "RESIDENT^DEMO"
    assert (str(model.SeriesInstanceUID), str(model.SOPInstanceUID)) in info.referenced_segs
    assert np.array_equal(mk.read_seg(back, volume), corrected)


def test_series_with_a_missing_slice_in_the_pacs_is_refused_and_nothing_changes(orthanc):
    profile = dataclasses.replace(DEFAULT_SITES[0], n_slices=12, matrix=(32, 32))
    ct, _ = make_phantom(profile, seed=3)
    patient = SyntheticPatient("RT002", "PHANTOM^RT002", generate_uid(entropy_srcs=["rt-gap"]))
    datasets = ct_series_from_volume(ct, patient, uid_entropy=["gap"])
    client = orthanc.client()
    client.store_instances(datasets[:5] + datasets[6:])
    study, series_uid = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    with pytest.raises(mk.SeriesGeometryError, match=series_uid):
        mk.read_series(client, study, series_uid)
    assert len(client.search_for_instances(study, series_uid)) == 11
