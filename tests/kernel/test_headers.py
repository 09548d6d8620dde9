"""Tests of medimg_kernel.series.read_headers (and its fast path, dicom_header.read_header).

The fast path must return what ``pydicom.dcmread(path, stop_before_pixels=True)`` returns: the same
raw elements (tag, VR, length, value bytes, file offset), file meta, preamble, filename and
original encoding. Files it does not handle go to pydicom; non-DICOM files give read_series' errors.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medimg_kernel.collector import collector_paused
from medimg_kernel.errors import ConfigurationError, DicomFileError
from medimg_kernel.series import read_headers, read_series
from medimg_kernel.dicom_header import NEED_MORE, read_header
from medimg_kernel.series.read import HEADER_READ_BYTES
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume
from tests.series_factory import not_dicom_files


def assert_same_as_pydicom(ds: Dataset, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        no_meta = path.read_bytes()[128:132] != b"DICM"  # read raw, as read_series does
        ref = pydicom.dcmread(path, stop_before_pixels=True, force=no_meta)
    assert type(ds) is type(ref)
    assert list(ds.elements()) == list(ref.elements())
    assert list(ds.file_meta.elements()) == list(ref.file_meta.elements())
    assert (ds.preamble, ds.filename, ds.timestamp) == (ref.preamble, ref.filename, ref.timestamp)
    assert ds.original_encoding == ref.original_encoding
    assert ds.original_character_set == ref.original_character_set
    assert ds == ref


@pytest.fixture
def ct_files(tmp_path: Path) -> list[Path]:
    volume = Volume(np.zeros((3, 8, 6), np.int16), (2.0, 0.5, 0.5), (-10.0, 5.0, 0.0))
    patient = SyntheticPatient("HDR-001", "PHANTOM^HEADERS", generate_uid(entropy_srcs=["headers"]))
    paths = []
    for k, ds in enumerate(ct_series_from_volume(volume, patient)):
        paths.append(tmp_path / f"{k}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def test_same_as_pydicom_in_order_given(ct_files: list[Path]) -> None:
    headers = read_headers(list(reversed(ct_files)))
    assert [h.filename for h in headers] == [str(p) for p in reversed(ct_files)]
    for ds, path in zip(headers, reversed(ct_files)):
        assert_same_as_pydicom(ds, path)
        assert "PixelData" not in ds and ds.Rows == 8
    assert read_header(ct_files[0].read_bytes(), filename=str(ct_files[0])) is not None  # the fast path


def test_header_longer_than_the_first_read(ct_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(ct_files[0])
    block = ds.private_block(0x0009, "MEDIMG TEST", create=True)
    block.add_new(0x10, "OB", b"x" * (HEADER_READ_BYTES * 2))  # a long value before the pixel data
    path = tmp_path / "long.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert read_header(data[:HEADER_READ_BYTES], filename=str(path), complete=False) is NEED_MORE
    (header,) = read_headers([path])
    assert_same_as_pydicom(header, path)
    assert len(header[0x00091010].value) == HEADER_READ_BYTES * 2


def test_file_without_pixel_data_and_small_file(ct_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(ct_files[0])
    del ds.PixelData
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < HEADER_READ_BYTES
    (header,) = read_headers([path])
    assert_same_as_pydicom(header, path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm",
                                  "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "ExplVR_LitEndNoMeta.dcm",
                                  "image_dfl.dcm", "liver_1frame.dcm", "test-SR.dcm"])
def test_pydicom_test_files_match_dcmread(name: str) -> None:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    (header,) = read_headers([path])
    assert_same_as_pydicom(header, path)


def test_not_dicom_files_give_read_series_errors(tmp_path: Path, ct_files: list[Path]) -> None:
    random_file, empty, text = not_dicom_files(tmp_path)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(ct_files[0].read_bytes()[:300])  # inside the header
    for path in (random_file, empty, text, tmp_path / "missing.dcm", truncated):
        with pytest.raises(DicomFileError) as ours:
            read_headers([path])
        assert str(path) in str(ours.value)
        if path is truncated:
            continue
        with pytest.raises(DicomFileError) as theirs:
            read_series(path)
        if path in (empty, tmp_path / "missing.dcm"):
            assert str(ours.value) == str(theirs.value)
        else:  # parsed as a raw data set without the UIDs an instance has
            assert "not a DICOM" in str(ours.value) and "not a DICOM" in str(theirs.value)
    with pytest.raises(ConfigurationError, match="sequence of file paths"):
        read_headers(ct_files[0])  # type: ignore[arg-type]


def test_collector_paused_is_reentrant_and_restores_state() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's gc.disable() stands
    finally:
        gc.enable()
