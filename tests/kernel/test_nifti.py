"""NIfTI in and out (issue #14 item 6): nibabel's own test images round-trip with their affines;
a DICOM-derived (oblique) volume written as NIfTI puts every voxel where nibabel and SimpleITK (an
independent reader, LPS inside) say it is; a model's NIfTI label map becomes a DICOM SEG on its
series; shears, 4-D images and label maps on another grid are refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medimg_kernel.nifti import NiftiError, labels_on, read_nifti, volume_to_nifti_affine, write_nifti
from medimg_kernel.seg import read_seg, write_seg

from .test_segmentation import OBLIQUE, SHAPE, make_labels, make_volume

NIBABEL_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_nibabels_images_round_trip(name, tmp_path):
    original = nib.load(str(NIBABEL_DATA / name))
    volume = read_nifti(NIBABEL_DATA / name)
    assert np.allclose(volume_to_nifti_affine(volume), original.header.get_best_affine(), atol=1e-5)
    assert np.array_equal(volume.array.transpose(2, 1, 0), np.asanyarray(original.dataobj).squeeze())
    again = read_nifti(write_nifti(volume, tmp_path / name))
    assert np.array_equal(again.array, volume.array)
    assert np.allclose(again.affine, volume.affine, atol=1e-5)


@pytest.mark.parametrize("geometry", list(OBLIQUE))
def test_a_dicom_volume_lands_where_nibabel_and_itk_put_it(geometry, tmp_path):
    import SimpleITK as sitk

    volume = make_volume(OBLIQUE[geometry])
    volume = type(volume)(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), volume.spacing, volume.origin,
                          volume.direction)
    path = write_nifti(volume, tmp_path / "ct.nii.gz")
    image = nib.load(str(path))
    itk = sitk.ReadImage(str(path))
    rng = np.random.default_rng(3)
    for k, j, i in zip(*(rng.integers(0, n, 10) for n in SHAPE), strict=True):
        lps = volume.index_to_lps((k, j, i))
        ras = image.affine @ np.array([i, j, k, 1.0])
        assert np.allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
        assert np.allclose(itk.TransformIndexToPhysicalPoint((int(i), int(j), int(k))), lps, atol=1e-3)
        assert np.asanyarray(image.dataobj)[i, j, k] == volume.array[k, j, i] == \
            sitk.GetArrayViewFromImage(itk)[k, j, i]


def test_a_models_nifti_labels_become_a_seg_on_the_series(tmp_path, write_and_read, assert_valid_dicom):
    ct = make_volume(OBLIQUE["oblique"])
    labels = make_labels(absent=None)
    output = type(ct)(labels, ct.spacing, ct.origin, ct.direction)
    read = read_nifti(write_nifti(output, tmp_path / "prediction.nii.gz", dtype=np.uint8))
    seg = write_and_read(write_seg(ct, labels_on(ct, read, source="prediction.nii.gz"), ["liver", "spleen", "kidney"],
                                   type_id="organs"))
    assert_valid_dicom(seg)
    assert np.array_equal(read_seg(seg, ct), labels)


def test_what_a_volume_cannot_hold_is_refused(tmp_path):
    shear = np.eye(4)
    shear[0, 1] = 0.3
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), shear), str(tmp_path / "shear.nii"))
    with pytest.raises(NiftiError, match=r"shear.nii: the affine shears"):
        read_nifti(tmp_path / "shear.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), str(tmp_path / "4d.nii"))
    with pytest.raises(NiftiError, match=r"4d.nii: a 4-D image"):
        read_nifti(tmp_path / "4d.nii")
    (tmp_path / "not.nii").write_bytes(b"DICM" * 100)
    with pytest.raises(NiftiError, match="not a readable NIfTI image"):
        read_nifti(tmp_path / "not.nii")
    ct = make_volume()
    moved = type(ct)(np.zeros(SHAPE, np.uint8), ct.spacing, tuple(np.add(ct.origin, (0.0, 0.0, 1.5))), ct.direction)
    with pytest.raises(NiftiError, match=r"labels: its grid is 1.500 mm away"):
        labels_on(ct, moved)
    fractional = type(ct)(np.full(SHAPE, 0.5, np.float32), ct.spacing, ct.origin, ct.direction)
    with pytest.raises(NiftiError, match="not integer labels"):
        labels_on(ct, fractional)
    with pytest.raises(NiftiError, match="ends in .nii"):
        write_nifti(ct, tmp_path / "ct.nrrd")
