"""Tests of medimg_kernel.series.read_series.

Fixtures (in this file; tests/kernel has no conftest)
--------
patient
    A made-up SyntheticPatient.
write_series
    ``write_series(datasets, folder="series")`` saves datasets as ``NNN.dcm`` files in a
    new folder under ``tmp_path`` and returns the paths in the given order.
testdata
    ``testdata(name)`` is the path of one of pydicom's bundled test files (offline).

Tolerances: voxel values are exact for uncompressed and lossless data; spacing within
1e-4 mm, origin within 1e-3 mm (positions are written with 6 significant digits),
direction within 1e-5.
"""

from __future__ import annotations

import copy
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from medimg_kernel.errors import (
    ConfigurationError,
    DicomFileError,
    MixedSeriesError,
    NotAnImageError,
    PixelDataError,
    SeriesError,
    SeriesGeometryError,
    UnsupportedImageError,
)
from medimg_kernel.series import read_series
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume
from tests.series_factory import not_dicom_files

AXIAL = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # z = S, y = P, x = L: IOP [1,0,0, 0,1,0]
SAGITTAL = np.array([[-1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # IOP [0,1,0, 0,0,-1]
CORONAL = np.array([[0.0, 1, 0], [0, 0, -1], [1, 0, 0]])  # IOP [1,0,0, 0,0,-1]


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


OBLIQUE = (rotation(0, 20) @ rotation(1, 20) @ AXIAL.T).T  # rows stay a right-handed z, y, x basis


def make_volume(shape: tuple[int, int, int] = (6, 5, 7), spacing: tuple[float, float, float] = (2.5, 0.7, 0.8),
                origin: tuple[float, float, float] = (-100.3, 50.25, 13.7), direction: np.ndarray = AXIAL,
                seed: int = 0, low: int = -1024, high: int = 2000) -> Volume:
    array = np.random.default_rng(seed).integers(low, high, size=shape).astype(np.int16 if high <= 32768 else np.int32)
    return Volume(array, spacing, origin, direction)


@pytest.fixture
def patient() -> SyntheticPatient:
    return SyntheticPatient("SERIES-TEST-001", "PHANTOM^SERIES", generate_uid(entropy_srcs=["series-test"]))


@pytest.fixture
def write_series(tmp_path: Path) -> Callable[..., list[Path]]:
    def write(datasets: Sequence[Dataset], folder: str = "series") -> list[Path]:
        target = tmp_path / folder
        target.mkdir(exist_ok=True)
        paths = []
        for k, ds in enumerate(datasets):
            paths.append(target / f"{k:03d}.dcm")
            ds.save_as(paths[-1], enforce_file_format=True)
        return paths

    return write


@pytest.fixture
def testdata() -> Callable[[str], Path]:
    return lambda name: Path(get_testdata_file(name))


def assert_same_volume(actual: Volume, expected: Volume) -> None:
    assert actual.array.dtype == np.int16
    np.testing.assert_array_equal(actual.array, expected.array)
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=1e-4)
    np.testing.assert_allclose(actual.origin, expected.origin, atol=1e-3)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=1e-5)


def along_normal(volume: Volume) -> list[float]:
    return [float(np.dot(np.asarray(s.ImagePositionPatient, float), volume.direction[0])) for s in volume.sources]


# -- geometry round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, CORONAL, OBLIQUE], ids=["axial", "sagittal", "coronal", "oblique"])
def test_round_trip_from_directory(direction: np.ndarray, patient: SyntheticPatient,
                                   write_series: Callable[..., list[Path]]) -> None:
    expected = make_volume(direction=direction)
    datasets = ct_series_from_volume(expected, patient)
    paths = write_series(datasets)

    volume = read_series(paths[0].parent)

    assert_same_volume(volume, expected)
    positions = along_normal(volume)
    assert positions == sorted(positions)
    assert [int(s.InstanceNumber) for s in volume.sources] == list(range(1, 7))
    assert all("PixelData" not in s for s in volume.sources)
    assert volume.series_instance_uid == datasets[0].SeriesInstanceUID
    assert volume.study_instance_uid == patient.study_instance_uid
    assert volume.frame_of_reference_uid == datasets[0].FrameOfReferenceUID
    assert volume.modality == "CT"


def test_any_input_order(patient: SyntheticPatient, write_series: Callable[..., list[Path]]) -> None:
    expected = make_volume(direction=OBLIQUE, shape=(9, 4, 3))
    datasets = ct_series_from_volume(expected, patient)
    paths = write_series(list(reversed(datasets)))  # file names in reverse slice order
    shuffled = list(paths)
    random.Random(3).shuffle(shuffled)

    for source in (paths[0].parent, shuffled, list(reversed(paths))):
        assert_same_volume(read_series(source), expected)
    mixed_datasets = list(datasets)
    random.Random(4).shuffle(mixed_datasets)
    assert_same_volume(read_series(mixed_datasets), expected)
    assert all("PixelData" in ds for ds in mixed_datasets), "the caller's datasets must not be modified"


def test_tolerates_rounding_jitter_odd_spacing_and_private_tags(patient: SyntheticPatient) -> None:
    expected = make_volume(direction=OBLIQUE, spacing=(0.6250003, 0.488281, 0.488281), shape=(8, 4, 4))
    datasets = ct_series_from_volume(expected, patient)
    rng = np.random.default_rng(1)
    for ds in datasets:
        ipp = np.asarray(ds.ImagePositionPatient, float) + rng.uniform(-0.004, 0.004, 3)
        ds.ImagePositionPatient = [f"{v:.5g}" for v in ipp]  # coarser rounding plus jitter
        block = ds.private_block(0x0009, "ACME SCANNER 1.0", create=True)
        block.add_new(0x01, "LO", "vendor value")
        block.add_new(0x02, "OB", b"\x00\x01" * 3000)  # larger than the deferral threshold

    volume = read_series(datasets)

    np.testing.assert_array_equal(volume.array, expected.array)
    np.testing.assert_allclose(volume.spacing, expected.spacing, atol=5e-3)
    np.testing.assert_allclose(volume.direction, expected.direction, atol=1e-5)


def test_left_handed_volume_comes_back_in_normal_order(patient: SyntheticPatient) -> None:
    # Volume's default direction (identity) is left-handed: its z runs against row x column
    written = make_volume(direction=np.eye(3))
    volume = read_series(ct_series_from_volume(written, patient))
    np.testing.assert_array_equal(volume.array, written.array[::-1])
    np.testing.assert_allclose(volume.direction[0], -written.direction[0])
    np.testing.assert_allclose(volume.index_to_lps([0, 0, 0]), written.index_to_lps([5, 0, 0]), atol=1e-3)


def test_single_slice_spacing_from_header(patient: SyntheticPatient, write_series: Callable[..., list[Path]]) -> None:
    datasets = ct_series_from_volume(make_volume(shape=(1, 4, 4), spacing=(3.0, 0.5, 0.5)), patient)
    assert read_series(datasets).spacing == (3.0, 0.5, 0.5)  # SliceThickness
    datasets[0].SpacingBetweenSlices = "4"
    assert read_series(write_series(datasets)).spacing[0] == 4.0  # SpacingBetweenSlices wins
    del datasets[0].SpacingBetweenSlices, datasets[0].SliceThickness
    assert read_series(datasets).spacing[0] == 1.0


# -- rescale ---------------------------------------------------------------------------------------


def test_rescale_types(patient: SyntheticPatient) -> None:
    expected = make_volume(shape=(3, 4, 4))
    datasets = ct_series_from_volume(expected, patient)
    for ds in datasets:
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-10.25"
    volume = read_series(datasets)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, (expected.array + 1024) * 0.5 - 10.25)

    datasets = ct_series_from_volume(expected, patient)
    datasets[1].RescaleIntercept = "-1000"  # per-slice intercepts: float, still exact
    volume = read_series(datasets)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array[1], expected.array[1] + 24)
    np.testing.assert_array_equal(volume.array[0], expected.array[0])

    big = make_volume(shape=(3, 4, 4), low=30000, high=64000)  # does not fit int16 after rescale
    volume = read_series(ct_series_from_volume(big, patient))
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, big.array.astype(np.int64).astype(np.float32))


def test_big_values_stay_exact_through_files(patient: SyntheticPatient, write_series: Callable[..., list[Path]]) -> None:
    values = np.array([-1024, 0, 31743, 64511], dtype=np.int64)  # stored 0 .. 65535
    array = np.resize(values, (2, 2, 4)).astype(np.float64)
    volume = Volume(array, (1.0, 1.0, 1.0), direction=AXIAL)
    read = read_series(write_series(ct_series_from_volume(volume, patient)))
    assert read.array.dtype == np.float32
    np.testing.assert_array_equal(read.array, array)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_bits_above_high_bit_are_ignored_like_pydicom(signed: bool, patient: SyntheticPatient,
                                                     write_series: Callable[..., list[Path]]) -> None:
    datasets = ct_series_from_volume(make_volume(shape=(3, 4, 4)), patient)
    stored = np.random.default_rng(7).integers(-2048 if signed else 0, 2048 if signed else 4096, size=(3, 4, 4))
    for ds, plane in zip(datasets, stored):
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        ds.RescaleIntercept = "0"
        ds.PixelData = ((plane & 0x0FFF) | 0xA000).astype(np.uint16).tobytes()  # junk in bits 12-15
    expected = [pydicom.dcmread(p).pixel_array for p in write_series(datasets)]
    for source in (datasets, write_series(datasets, "again")):
        volume = read_series(source)
        np.testing.assert_array_equal(volume.array, np.stack(expected))
        np.testing.assert_array_equal(volume.array, stored)


# -- compressed transfer syntaxes ---------------------------------------------------------------------


def _dcmtk(tool: str, options: list[str], paths: list[Path], out_dir: Path) -> list[Path]:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (Debian dcmtk) not installed")
    out_dir.mkdir()
    outputs = []
    for path in paths:
        outputs.append(out_dir / path.name)
        subprocess.run([tool, *options, str(path), str(outputs[-1])], check=True, capture_output=True)
    return outputs


def _bits(datasets: list[Dataset], bits: int, array: np.ndarray) -> list[Dataset]:
    """Re-encode the stored values with fewer bits (rescale 1/0)."""
    for ds, plane in zip(datasets, array):
        ds.BitsAllocated = 8 if bits == 8 else 16
        ds.BitsStored, ds.HighBit = bits, bits - 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.PixelData = plane.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    return datasets


@pytest.mark.parametrize(
    ("tool", "options", "bits", "max_error", "syntax"),
    [
        ("dcmcjpeg", ["+e1"], 16, 0, "1.2.840.10008.1.2.4.70"),
        ("dcmcjpeg", ["+el", "+sv", "6"], 16, 0, "1.2.840.10008.1.2.4.57"),
        ("dcmcjpeg", ["+eb", "+q", "95"], 8, 12, "1.2.840.10008.1.2.4.50"),
        ("dcmcjpeg", ["+ee", "+q", "95"], 12, 60, "1.2.840.10008.1.2.4.51"),
        ("dcmcjpls", ["+el"], 16, 0, "1.2.840.10008.1.2.4.80"),
        ("dcmcjpls", ["+en", "+md", "2"], 16, 2, "1.2.840.10008.1.2.4.81"),
        ("dcmcrle", [], 16, 0, "1.2.840.10008.1.2.5"),
    ],
    ids=["jpeg-sv1", "jpeg-p14", "jpeg-baseline", "jpeg-extended", "jpegls", "jpegls-near", "rle"],
)
def test_compressed_with_dcmtk(tool: str, options: list[str], bits: int, max_error: int, syntax: str,
                               patient: SyntheticPatient, write_series: Callable[..., list[Path]],
                               tmp_path: Path) -> None:
    # smooth images so lossy codecs stay close; values within the stored bit depth
    z, y, x = np.mgrid[0:4, 0:16, 0:16]
    stored = ((z * 13 + y * 7 + x * 5) * (2 ** bits - 1) // 300).astype(np.int64)
    expected = Volume(stored.astype(np.float64) - 1024, (2.0, 0.9, 0.9), direction=AXIAL)
    datasets = ct_series_from_volume(expected, patient)
    if bits != 16:
        datasets = _bits(datasets, bits, stored)
    compressed = _dcmtk(tool, options, write_series(datasets), tmp_path / "compressed")
    assert pydicom.dcmread(compressed[0]).file_meta.TransferSyntaxUID == syntax

    volume = read_series(compressed[::-1])

    truth = stored if bits != 16 else stored - 1024
    assert np.abs(volume.array.astype(np.int64) - truth).max() <= max_error


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless, JPEGLSLossless, JPEG2000], ids=lambda u: u.name)
def test_compressed_with_pydicom(syntax: Any, patient: SyntheticPatient, write_series: Callable[..., list[Path]]) -> None:
    expected = make_volume(shape=(3, 64, 64), direction=OBLIQUE, low=-1024, high=1500)
    datasets = ct_series_from_volume(expected, patient)
    for ds in datasets:
        kwargs = {"j2k_psnr": [80]} if syntax == JPEG2000 else {}
        ds.compress(syntax, **kwargs)
    volume = read_series(write_series(datasets))
    if syntax == JPEG2000:  # lossy at 80 dB PSNR of the 16-bit range: RMS error about 6.5 on noise
        error = volume.array.astype(np.float64) - expected.array
        assert np.sqrt(np.mean(error**2)) <= 2 * 65535 * 10 ** (-80 / 20) and np.abs(error).max() <= 100
    else:
        assert_same_volume(volume, expected)


def test_big_endian_and_implicit_match_little_endian(testdata: Callable[[str], Path]) -> None:
    reference = read_series(testdata("MR_small.dcm"))
    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm"):
        np.testing.assert_array_equal(read_series(testdata(name)).array, reference.array, err_msg=name)
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    np.testing.assert_array_equal(reference.array[0], ds.pixel_array)


# -- refusals -----------------------------------------------------------------------------------------


@pytest.fixture
def axial_datasets(patient: SyntheticPatient) -> list[Dataset]:
    return ct_series_from_volume(make_volume(shape=(6, 4, 4)), patient)


def test_refuses_gap(axial_datasets: list[Dataset]) -> None:
    del axial_datasets[3]
    with pytest.raises(SeriesGeometryError, match="missing slice") as info:
        read_series(axial_datasets)
    message = str(info.value)
    assert axial_datasets[0].SeriesInstanceUID in message
    below, above = (float(axial_datasets[k].ImagePositionPatient[2]) for k in (2, 3))  # axial: normal = +S
    assert f"{below:.3f} and {above:.3f} mm" in message  # the positions around the gap


def test_refuses_duplicate(axial_datasets: list[Dataset]) -> None:
    copy = ct_series_from_volume(make_volume(shape=(6, 4, 4)), SyntheticPatient("x", "y", axial_datasets[0].StudyInstanceUID),
                                 series_instance_uid=axial_datasets[0].SeriesInstanceUID,
                                 frame_of_reference_uid=axial_datasets[0].FrameOfReferenceUID)[2]
    copy.SOPInstanceUID = generate_uid()
    with pytest.raises(SeriesGeometryError, match="duplicate slice position") as info:
        read_series([*axial_datasets, copy])
    assert axial_datasets[0].SeriesInstanceUID in str(info.value)


def test_refuses_uneven_spacing_and_shear(axial_datasets: list[Dataset]) -> None:
    moved = copy.deepcopy(axial_datasets)
    moved[2].ImagePositionPatient = [*moved[2].ImagePositionPatient[:2], float(moved[2].ImagePositionPatient[2]) + 0.8]
    with pytest.raises(SeriesGeometryError, match="non-uniform slice spacing"):
        read_series(moved)
    for k, ds in enumerate(axial_datasets):  # gantry-tilt-like shear: 0.5 mm per slice along y
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], float(ds.ImagePositionPatient[1]) + 0.5 * k,
                                   ds.ImagePositionPatient[2]]
    with pytest.raises(SeriesGeometryError, match="not stacked along the normal"):
        read_series(axial_datasets)


def test_refuses_mixed_series_unless_one_is_chosen(patient: SyntheticPatient,
                                                   write_series: Callable[..., list[Path]]) -> None:
    first = ct_series_from_volume(make_volume(shape=(3, 4, 4)), patient, series_number=1)
    second = ct_series_from_volume(make_volume(shape=(4, 4, 4), seed=2), patient, series_number=2)
    folder = write_series([*first, *second])[0].parent
    with pytest.raises(MixedSeriesError) as info:
        read_series(folder)
    assert first[0].SeriesInstanceUID in str(info.value) and second[0].SeriesInstanceUID in str(info.value)
    assert read_series(folder, series_instance_uid=second[0].SeriesInstanceUID).shape == (4, 4, 4)
    with pytest.raises(SeriesError, match="no instance of this series"):
        read_series(folder, series_instance_uid="1.2.3.4")


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("ImageOrientationPatient", [0, 1, 0, 0, 0, -1]), ("Rows", 5), ("PixelSpacing", [0.8, 0.8]),
     ("FrameOfReferenceUID", "1.2.3.4.5")],
)
def test_refuses_mixed_attributes(keyword: str, value: Any, axial_datasets: list[Dataset]) -> None:
    setattr(axial_datasets[4], keyword, value)
    if keyword == "Rows":
        axial_datasets[4].PixelData = np.zeros((5, 4), np.uint16).tobytes()
    with pytest.raises(MixedSeriesError, match=keyword) as info:
        read_series(axial_datasets)
    assert axial_datasets[0].SeriesInstanceUID in str(info.value)


def test_refuses_missing_pixel_data_and_geometry(axial_datasets: list[Dataset]) -> None:
    del axial_datasets[1].ImagePositionPatient
    with pytest.raises(SeriesGeometryError, match="ImagePositionPatient is missing"):
        read_series(axial_datasets)
    axial_datasets[1].ImagePositionPatient = axial_datasets[0].ImagePositionPatient
    del axial_datasets[2].PixelData
    with pytest.raises(PixelDataError, match="has no pixel data"):
        read_series(axial_datasets)


def test_series_with_one_truncated_file(axial_datasets: list[Dataset], write_series: Callable[..., list[Path]]) -> None:
    paths = write_series(axial_datasets)
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[:-10])  # inside the pixel data
    with pytest.raises(PixelDataError, match="truncated") as info:
        read_series(paths[0].parent)
    assert str(paths[3]) in str(info.value) and axial_datasets[0].SeriesInstanceUID in str(info.value)
    paths[3].write_bytes(data[:300])  # inside the header
    with pytest.raises((DicomFileError, PixelDataError)) as info:
        read_series(paths)
    assert str(paths[3]) in str(info.value)


def test_no_meta_file_is_read(axial_datasets: list[Dataset], tmp_path: Path) -> None:
    ds = axial_datasets[0]
    path = tmp_path / "raw.dcm"
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True)  # no preamble, no file meta
    assert pydicom.dcmread(path, force=True).get("PixelData")
    volume = read_series(path)
    assert volume.shape == (1, 4, 4) and volume.array.dtype == np.int16


MALFORMED = [
    ("MR_truncated.dcm", PixelDataError, "truncated"),
    ("no_meta.dcm", DicomFileError, "not a DICOM image instance"),  # one stray element: no image in it
    ("badVR.dcm", DicomFileError, "NumberOfFrames"),
    ("rtplan_truncated.dcm", NotAnImageError, "RT Plan"),
    ("meta_missing_tsyntax.dcm", DicomFileError, "not a DICOM image instance"),
    ("test-SR.dcm", NotAnImageError, "SR Storage"),
    ("rtplan.dcm", NotAnImageError, "RT Plan"),
    ("rtstruct.dcm", NotAnImageError, "RT Structure Set"),
    ("liver_1frame.dcm", NotAnImageError, "Segmentation Storage"),
    ("rtdose.dcm", UnsupportedImageError, "multi-frame"),
    ("SC_rgb_jpeg.dcm", UnsupportedImageError, "colour"),
    ("ExplVR_LitEndNoMeta.dcm", NotAnImageError, "RT Ion Plan"),  # readable without file meta
    ("JPEG2000.dcm", SeriesGeometryError, "ImageOrientationPatient"),  # no patient geometry
]


@pytest.mark.parametrize(("name", "error", "text"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_pydicom_malformed_and_non_image_files(name: str, error: type[Exception], text: str,
                                                testdata: Callable[[str], Path]) -> None:
    with pytest.raises(error, match=text) as info:
        read_series(testdata(name))
    assert name in str(info.value)


def test_not_dicom_files(tmp_path: Path) -> None:
    random_file, empty, text = not_dicom_files(tmp_path)
    for path in (random_file, empty, text):
        with pytest.raises(DicomFileError) as info:
            read_series(path)
        assert str(path) in str(info.value)
    with pytest.raises(DicomFileError):
        read_series(tmp_path / "missing.dcm")
    with pytest.raises(SeriesError, match="holds no files"):
        (tmp_path / "empty_dir").mkdir()
        read_series(tmp_path / "empty_dir")
    with pytest.raises(ConfigurationError):
        read_series(42)  # type: ignore[arg-type]


# -- DICOMweb --------------------------------------------------------------------------------------------


class FakeDICOMweb:
    """Just enough of DICOMwebProtocol: instances of one series, streamed."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.datasets = datasets
        self.calls: list[tuple[str, str]] = []

    def iter_series(self, study_instance_uid: str, series_instance_uid: str) -> Iterator[Dataset]:
        self.calls.append((study_instance_uid, series_instance_uid))
        yield from (ds for ds in self.datasets if ds.SeriesInstanceUID == series_instance_uid)

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        return list(self.iter_series(study_instance_uid, series_instance_uid))

    def _unused(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    search_for_studies = search_for_series = search_for_instances = _unused
    retrieve_study = retrieve_instance = retrieve_series_metadata = store_instances = _unused


def test_dicomweb_source(patient: SyntheticPatient) -> None:
    expected = make_volume(shape=(5, 4, 4), direction=SAGITTAL)
    datasets = ct_series_from_volume(expected, patient)
    random.Random(0).shuffle(datasets)
    client = FakeDICOMweb(datasets)
    study, series = patient.study_instance_uid, datasets[0].SeriesInstanceUID

    assert_same_volume(read_series(client, study, series), expected)
    assert client.calls == [(study, series)]
    with pytest.raises(ConfigurationError, match="series_instance_uid"):
        read_series(client, study)
    with pytest.raises(SeriesError, match="no instances"):
        read_series(client, study, "1.2.3")
