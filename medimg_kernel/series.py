"""Read one DICOM image series into a :class:`~medimg_kernel.volume.Volume`.

:func:`read_series` accepts a DICOMweb origin (:class:`~medimg_kernel.dicomweb.DICOMwebProtocol`),
a directory, a list of files or a list of :class:`pydicom.dataset.Dataset`, checks that
the instances form one regular stack of single-frame greyscale slices and returns the
voxels in Hounsfield units (or the modality's rescaled units) with their LPS geometry.

Geometry rules (all lengths in millimetres, patient coordinates LPS):

* The slice normal is the cross product of the row and column direction cosines of
  ImageOrientationPatient; slices are sorted by the projection of ImagePositionPatient
  on it, ascending, whatever the input order.
* The slice spacing is the distance between the first and last projected positions
  divided by the number of steps, never SliceThickness or SpacingBetweenSlices (those
  are used only for a single-slice series: SpacingBetweenSlices, else SliceThickness,
  else 1 mm with a warning).
* Tolerances: orientation cosines agree within ``ORIENTATION_ATOL``; every slice lies
  within ``max(POSITION_ATOL_MM, SPACING_RTOL * spacing)`` of its place on the regular
  grid along the normal, and within ``max(POSITION_ATOL_MM, INPLANE_RTOL * pixel
  spacing)`` of the first slice in the image plane (so positions rounded to ~6
  significant digits pass); slices closer than ``POSITION_ATOL_MM`` are duplicates; a
  step larger than ``GAP_FACTOR`` median steps means missing slices.

Uncompressed little-endian files are not decoded: headers are parsed with the pixel data
deferred, then each file's pixel bytes are read straight into one preallocated array
(a few threads overlap the reads) and the rescale is applied in place. Other transfer
syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE, big endian, deflate) are decoded by pydicom's
pixel data handlers (pylibjpeg, pyjpegls).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .dicomweb import DICOMwebProtocol
from .errors import (
    ConfigurationError,
    DicomFileError,
    MixedSeriesError,
    NotAnImageError,
    PixelDataError,
    SeriesError,
    SeriesGeometryError,
    UnsupportedImageError,
)
from .volume import Volume

logger = logging.getLogger(__name__)

__all__ = ["read_series", "ORIENTATION_ATOL", "POSITION_ATOL_MM", "SPACING_RTOL", "INPLANE_RTOL", "GAP_FACTOR"]

#: Largest difference between slices' ImageOrientationPatient cosines (unitless).
ORIENTATION_ATOL = 1e-4
#: Position tolerance along the normal (mm); slices closer than this are duplicates.
POSITION_ATOL_MM = 0.02
#: Tolerance of a slice's distance from its regular-grid place, relative to the spacing.
SPACING_RTOL = 0.02
#: In-plane shift allowed between slices, as a fraction of the pixel spacing.
INPLANE_RTOL = 0.1
#: A step larger than this many median steps is a gap (missing slices).
GAP_FACTOR = 1.5

_PIXEL_DATA = 0x7FE00010
#: Pixel data tags (float, double, integer) removed from the headers kept in ``Volume.sources``.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, _PIXEL_DATA})
#: Elements longer than this (bytes) are not loaded while parsing headers.
_DEFER_BYTES = 4096
_NATIVE_LE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
#: Segmentation and label-map segmentation storage: pixel data, but not images.
_NOT_IMAGES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})
_IO_THREADS = 4
#: Attributes read once per instance: string-valued (list of strings) and US (int).
_TEXT_TAGS = {
    "SOPClassUID": 0x00080016, "Modality": 0x00080060, "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E, "FrameOfReferenceUID": 0x00200052,
    "ImagePositionPatient": 0x00200032, "ImageOrientationPatient": 0x00200037, "PixelSpacing": 0x00280030,
    "SliceThickness": 0x00180050, "SpacingBetweenSlices": 0x00180088, "NumberOfFrames": 0x00280008,
    "PhotometricInterpretation": 0x00280004, "RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052,
}
_US_TAGS = {
    "SamplesPerPixel": 0x00280002, "Rows": 0x00280010, "Columns": 0x00280011,
    "BitsAllocated": 0x00280100, "BitsStored": 0x00280101, "PixelRepresentation": 0x00280103,
}


@dataclass
class _Instance:
    """One source instance: where it came from, its header and attributes, where its pixels are."""

    label: str  # the file path, or "instance <SOPInstanceUID>" for datasets
    header: Dataset  # without pixel data
    attrs: dict[str, Any]  # _TEXT_TAGS as lists of str, _US_TAGS as int
    has_pixels: bool
    path: Path | None = None
    dataset: Dataset | None = None  # the caller's dataset, pixels included
    pixel_offset: int | None = None  # file offset of raw little-endian pixels (fast path)

    def text(self, keyword: str) -> str:
        values = self.attrs.get(keyword)
        return values[0] if values else ""


def read_series(
    source: DICOMwebProtocol | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Sequence[Dataset],
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> Volume:
    """Read a series of single-frame greyscale images into a Volume.

    Parameters
    ----------
    source
        Where the instances are: a DICOMweb origin (then both UIDs are required and
        instances are streamed with ``iter_series``); a directory (every file directly
        in it except dot-files and ``DICOMDIR``); a file path; a sequence of file paths;
        or a sequence of :class:`~pydicom.dataset.Dataset` (not modified). Any order.
    study_instance_uid
        Keep only instances of this study (required for DICOMweb).
    series_instance_uid
        Keep only instances of this series; needed when ``source`` holds several
        series (required for DICOMweb).

    Returns
    -------
    Volume
        ``array`` indexed ``[z, y, x]`` with RescaleSlope/RescaleIntercept applied (HU
        for CT): ``int16`` when every slice has slope 1 and the same integral intercept
        and the values fit, else ``float32``. ``z`` increases along the slice normal
        (row cosine × column cosine). ``spacing`` ``(dz, dy, dx)`` in mm; ``origin`` the
        LPS position (mm) of voxel ``[0, 0, 0]``; ``direction`` rows = LPS unit vectors
        of the z, y, x axes (see :mod:`medimg_kernel.volume`); ``sources`` the headers
        without pixel data in ``z`` order; study, series, frame-of-reference UIDs and
        modality from the first slice. Pixel padding values are kept as they are.

    Raises
    ------
    ConfigurationError
        ``source`` is of an unsupported kind, or DICOMweb without both UIDs.
    DicomFileError
        A file or dataset is not readable DICOM (not DICOM, truncated header, bad values).
    MixedSeriesError
        Several series, orientations, sizes, pixel formats, pixel spacings, frames of
        reference or modalities are mixed.
    SeriesGeometryError
        Missing or duplicate slices, uneven spacing, sheared stacks, missing geometry.
    NotAnImageError
        An instance is not an image (SR, SEG, RT plan, ...).
    UnsupportedImageError
        Multi-frame or enhanced instances, colour images, Modality LUT Sequences.
    PixelDataError
        Pixel data is missing, truncated or cannot be decoded.
    """
    instances = _select(_collect(source, study_instance_uid, series_instance_uid),
                        study_instance_uid, series_instance_uid)
    uid = instances[0].text("SeriesInstanceUID")
    for instance in instances:
        _check_image(instance, uid)
    _check_consistent(instances, uid)
    geometry = _stack_geometry(instances, uid)
    ordered = [instances[k] for k in geometry.order]
    array = _read_pixels(ordered, _rescale_of(ordered, uid), uid)
    return _volume(array, geometry, ordered)


def _volume(array: np.ndarray, geometry: _StackGeometry, ordered: list[_Instance]) -> Volume:
    first = ordered[0]
    volume = Volume(
        array=array, spacing=geometry.spacing, origin=geometry.origin, direction=geometry.direction,
        sources=tuple(i.header for i in ordered),
        study_instance_uid=first.text("StudyInstanceUID"), series_instance_uid=first.text("SeriesInstanceUID"),
        frame_of_reference_uid=first.text("FrameOfReferenceUID"), modality=first.text("Modality"),
    )
    logger.debug("read series %s: shape %s, spacing %s mm, %s",
                 volume.series_instance_uid, volume.shape, volume.spacing, array.dtype)
    return volume


# -- step 1: collect headers -----------------------------------------------------------------


def _collect(source: Any, study_uid: str | None, series_uid: str | None) -> list[_Instance]:
    """Headers of every instance in ``source``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_dir():
            return [_from_file(path)]
        with os.scandir(path) as entries:
            files = sorted(Path(e.path) for e in entries if e.is_file() and not e.name.startswith(".")
                           and e.name.upper() != "DICOMDIR")
        if not files:
            raise SeriesError(series_uid, f"directory {path} holds no files")
        return [_from_file(p) for p in files]
    if isinstance(source, DICOMwebProtocol):
        if not study_uid or not series_uid:
            raise ConfigurationError("read_series from a DICOMweb source needs both study_instance_uid "
                                     "and series_instance_uid")
        return [_from_dataset(ds, n) for n, ds in enumerate(source.iter_series(study_uid, series_uid))]
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        if all(isinstance(item, Dataset) for item in source):
            return [_from_dataset(ds, n) for n, ds in enumerate(source)]
        if all(isinstance(item, (str, os.PathLike)) for item in source):
            return [_from_file(Path(p)) for p in source]
    raise ConfigurationError("read_series source must be a DICOMweb client, a directory, a file path, or a "
                             f"sequence of file paths or of pydicom Datasets; got {type(source).__name__}")


def _from_file(path: Path) -> _Instance:
    """Parse one file's header; locate its pixel bytes when they can be read raw."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                raise DicomFileError(path, "empty file (0 bytes), not DICOM")
            ds = _dcmread(fp, path)
    except OSError as exc:
        raise DicomFileError(path, f"cannot be opened ({exc.strerror or exc})") from exc
    attrs = _attributes(ds, str(path))
    offset = _raw_pixel_offset(ds, attrs, path, size)
    has_pixels = _PIXEL_DATA in ds
    for tag in _PIXEL_TAGS.intersection(ds.keys()):
        del ds[tag]
    return _Instance(str(path), ds, attrs, has_pixels, path=path, pixel_offset=offset)


def _dcmread(fp: Any, path: Path) -> Dataset:
    """``dcmread`` with pixel data deferred; files without preamble/file meta are read raw."""
    try:
        return dcmread(fp, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        fp.seek(0)
        try:
            with warnings.catch_warnings():  # guessing the encoding of non-DICOM bytes warns a lot
                warnings.simplefilter("ignore")
                ds = dcmread(fp, defer_size=_DEFER_BYTES, force=True)
        except Exception as exc:  # noqa: BLE001 - any parser failure means "not DICOM"
            raise DicomFileError(path, "not a DICOM file: no 'DICM' prefix and not parsable as a raw "
                                       f"data set ({type(exc).__name__})") from exc
        logger.debug("%s: no DICOM file meta information; read as a raw data set", path)
        return ds
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise DicomFileError(path, f"cannot be parsed as DICOM ({type(exc).__name__}: {str(exc)[:160]}); "
                                   "the file may be truncated or damaged") from exc


def _attributes(ds: Dataset, label: str) -> dict[str, Any]:
    """The attributes read_series uses, parsed once (raw bytes decoded directly when possible)."""
    attrs: dict[str, Any] = {}
    try:
        for keyword, tag in _TEXT_TAGS.items():
            elem = ds.get_item(tag, keep_deferred=True)
            if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
                attrs[keyword] = [v.strip(" \x00") for v in elem.value.decode("latin-1").split("\\")]
            elif elem is not None:
                value = ds[tag].value
                values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
                attrs[keyword] = [str(v) for v in values if v is not None and v != ""]
        for keyword, tag in _US_TAGS.items():
            elem = ds.get_item(tag, keep_deferred=True)
            if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and len(elem.value) == 2:
                attrs[keyword] = int.from_bytes(elem.value, "little" if elem.is_little_endian else "big")
            elif elem is not None and ds[tag].value not in (None, ""):
                attrs[keyword] = int(ds[tag].value)
    except Exception as exc:  # noqa: BLE001 - invalid values raise many types in pydicom
        raise DicomFileError(label, f"an image attribute cannot be read ({type(exc).__name__}); "
                                    "the header is damaged") from exc
    if not attrs.get("SOPClassUID") or not attrs.get("SeriesInstanceUID"):
        raise DicomFileError(label, "no SOPClassUID or SeriesInstanceUID: not a DICOM image instance, "
                                    "or the file is truncated or damaged")
    return attrs


def _raw_pixel_offset(ds: Dataset, attrs: dict[str, Any], path: Path, size: int) -> int | None:
    """File offset of uncompressed little-endian pixel data, else ``None`` (decode instead)."""
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(elem, RawDataElement) or elem.value_tell is None or elem.length == 0xFFFFFFFF:
        return None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if (syntax is not None and syntax not in _NATIVE_LE) or not ds.original_encoding[1]:
        return None
    if elem.value_tell + elem.length > size:
        raise PixelDataError(attrs["SeriesInstanceUID"][0], f"{path}: pixel data truncated: the element "
                             f"claims {elem.length} bytes at offset {elem.value_tell}, the file has {size}")
    return int(elem.value_tell)


def _from_dataset(ds: Dataset, n: int) -> _Instance:
    """Header copy of a caller's dataset (which is left untouched)."""
    if not isinstance(ds, Dataset):
        raise ConfigurationError(f"the DICOMweb source yielded a {type(ds).__name__}, not a Dataset")
    label = f"instance {ds.get('SOPInstanceUID', f'#{n}')}"
    header = Dataset({tag: ds.get_item(tag, keep_deferred=True) for tag in ds.keys() if tag not in _PIXEL_TAGS})
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        header.set_original_encoding(implicit, little, ds.original_character_set)
    return _Instance(label, header, _attributes(ds, label), _PIXEL_DATA in ds, dataset=ds)


# -- step 2: select and check ------------------------------------------------------------------


def _select(instances: list[_Instance], study_uid: str | None, series_uid: str | None) -> list[_Instance]:
    """Keep the requested study/series; refuse a mixture when none was requested."""
    if not instances:
        raise SeriesError(series_uid, "no instances were given or returned by the source")
    if study_uid:
        instances = [i for i in instances if i.text("StudyInstanceUID") == study_uid]
    found = Counter(i.text("SeriesInstanceUID") for i in instances)
    if series_uid:
        kept = [i for i in instances if i.text("SeriesInstanceUID") == series_uid]
        if not kept:
            raise SeriesError(series_uid, f"no instance of this series in the source (study filter "
                                          f"{study_uid or 'none'}); series found: {_listing(found) or 'none'}")
        return kept
    if not instances:
        raise SeriesError(None, f"no instance of study {study_uid} in the source")
    if len(found) > 1:
        raise MixedSeriesError(found.most_common(1)[0][0], f"the source mixes {len(found)} series "
                               f"({_listing(found)}); pass series_instance_uid= to choose one")
    return instances


def _listing(counter: Counter[Any]) -> str:
    return ", ".join(f"{key} ({count} instances)" for key, count in counter.most_common(8))


def _check_image(instance: _Instance, uid: str) -> None:
    """Refuse non-images and images this reader cannot stack."""
    sop = UID(instance.text("SOPClassUID"))
    what = f"{instance.label} (SOP class {sop.name})"
    if sop in _NOT_IMAGES or (not instance.has_pixels and "Rows" not in instance.attrs):
        raise NotAnImageError(uid, f"{what} is not an image; read_series reads image series only "
                                   "(use read_seg / read_sr for segmentations and reports)")
    frames = instance.text("NumberOfFrames") or "1"
    if not frames.strip().isdigit():
        raise DicomFileError(instance.label, f"NumberOfFrames {frames!r} is not an integer string (invalid "
                                             "IS value); the header is damaged")
    if int(frames) > 1 or "SharedFunctionalGroupsSequence" in instance.header:
        raise UnsupportedImageError(uid, f"{what} is a multi-frame or enhanced object ({frames} frames); "
                                         "read_series supports single-frame images only: convert it to "
                                         "single-frame instances first (e.g. with highdicom or dcmtk)")
    photometric = instance.text("PhotometricInterpretation") or "MONOCHROME2"
    if instance.attrs.get("SamplesPerPixel", 1) != 1 or not photometric.startswith("MONOCHROME"):
        raise UnsupportedImageError(uid, f"{what} is a colour image ({photometric}); only greyscale "
                                         "(MONOCHROME1/2) series are supported")
    if "ModalityLUTSequence" in instance.header and "RescaleSlope" not in instance.attrs:
        raise UnsupportedImageError(uid, f"{what} uses a Modality LUT Sequence, which is not supported")
    if not instance.has_pixels:
        raise PixelDataError(uid, f"{what} has no pixel data")
    allocated = instance.attrs.get("BitsAllocated")
    if allocated not in (8, 16, 32) or not 0 < instance.attrs.get("BitsStored", allocated) <= allocated \
            or not instance.attrs.get("Rows") or not instance.attrs.get("Columns"):
        raise UnsupportedImageError(uid, f"{what} has Rows {instance.attrs.get('Rows')}, Columns "
                                         f"{instance.attrs.get('Columns')}, BitsAllocated "
                                         f"{allocated}, BitsStored {instance.attrs.get('BitsStored')}; 8, 16 or 32 bits are supported")


_SAME = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "FrameOfReferenceUID", "Modality")


def _check_consistent(instances: list[_Instance], uid: str) -> None:
    """All instances share size, pixel format, frame of reference and modality."""
    for keyword in _SAME:
        values = Counter(str(i.attrs.get(keyword, "")) for i in instances)
        if len(values) > 1:
            common = values.most_common(1)[0][0]
            odd = next(i for i in instances if str(i.attrs.get(keyword, "")) != common)
            raise MixedSeriesError(uid, f"{keyword} differs between instances ({_listing(values)}), "
                                        f"e.g. in {odd.label}")


# -- step 3: geometry ----------------------------------------------------------------------


@dataclass(frozen=True)
class _StackGeometry:
    order: list[int]  # input indices in ascending position along the normal
    spacing: tuple[float, float, float]  # (dz, dy, dx) mm
    origin: tuple[float, float, float]  # LPS mm of the first slice's first voxel
    direction: np.ndarray  # rows: normal, column cosine, row cosine


def _stack_geometry(instances: Sequence[_Instance], uid: str) -> _StackGeometry:
    """Sort slices along the normal and derive spacing, origin and direction."""
    direction = _orientation(instances, uid)
    dy, dx = _pixel_spacing(instances, uid)
    positions = np.array([_floats(i, "ImagePositionPatient", 3, uid) for i in instances])
    order = np.argsort(positions @ direction[0], kind="stable")
    ordered = [instances[k] for k in order]
    positions = positions[order]
    dz = _slice_spacing(positions, direction[0], ordered, uid)
    _check_in_plane(positions, direction, (dy, dx), ordered, uid)
    return _StackGeometry([int(k) for k in order], (dz, dy, dx), tuple(positions[0]), direction)


def _floats(instance: _Instance, keyword: str, count: int, uid: str) -> np.ndarray:
    """``count`` finite numbers of a decimal-string attribute."""
    try:
        numbers = np.array([float(v) for v in instance.attrs.get(keyword, [])], dtype=float)
    except ValueError as exc:
        raise SeriesGeometryError(uid, f"{instance.label}: {keyword} is not numeric") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise SeriesGeometryError(uid, f"{instance.label}: {keyword} is missing or does not hold {count} "
                                       "numbers; read_series needs the geometry of every slice")
    return numbers


def _orientation(instances: Sequence[_Instance], uid: str) -> np.ndarray:
    """Orthonormal direction matrix (rows: normal, column cosine, row cosine) shared by all slices."""
    cosines = np.array([_floats(i, "ImageOrientationPatient", 6, uid) for i in instances])
    deviation = np.abs(cosines - cosines[0]).max(axis=1)
    if deviation.max() > ORIENTATION_ATOL:
        k = int(deviation.argmax())
        raise MixedSeriesError(uid, f"ImageOrientationPatient differs between slices: {instances[k].label} "
                                    f"has {_fmt(cosines[k])}, {instances[0].label} has {_fmt(cosines[0])}")
    row, col = cosines.mean(axis=0)[:3], cosines.mean(axis=0)[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise SeriesGeometryError(uid, f"ImageOrientationPatient {_fmt(cosines[0])} is not two orthogonal "
                                       "unit vectors")
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    return np.stack([np.cross(row, col), col, row])


def _pixel_spacing(instances: Sequence[_Instance], uid: str) -> tuple[float, float]:
    values = np.array([_floats(i, "PixelSpacing", 2, uid) for i in instances])
    if np.any(values <= 0):
        raise SeriesGeometryError(uid, f"{instances[0].label}: PixelSpacing must be positive")
    deviation = np.abs(values - values[0]).max(axis=1) / values[0].min()
    if deviation.max() > 1e-4:
        k = int(deviation.argmax())
        raise MixedSeriesError(uid, f"PixelSpacing differs between slices: {instances[k].label} has "
                                    f"{_fmt(values[k])} mm, {instances[0].label} has {_fmt(values[0])} mm")
    return float(values[0][0]), float(values[0][1])


def _slice_spacing(positions: np.ndarray, normal: np.ndarray, ordered: Sequence[_Instance], uid: str) -> float:
    """Spacing along the normal (mm) of sorted slices; refuses duplicates, gaps and uneven steps."""
    if len(positions) == 1:
        return _single_slice_spacing(ordered[0], uid)
    along = positions @ normal
    steps = np.diff(along)
    labels = [i.label for i in ordered]
    if steps.min() <= POSITION_ATOL_MM:
        k = int(steps.argmin())
        raise SeriesGeometryError(uid, f"duplicate slice position {along[k]:.3f} mm along the normal (LPS "
                                       f"{_fmt(positions[k])}) in {labels[k]} and {labels[k + 1]}; the series "
                                       "may hold several acquisitions or temporal positions")
    median = float(np.median(steps))
    if steps.max() > GAP_FACTOR * median:
        k = int(steps.argmax())
        raise SeriesGeometryError(uid, f"missing slice(s): a {steps[k]:.3f} mm gap between positions "
                                       f"{along[k]:.3f} and {along[k + 1]:.3f} mm along the normal (LPS "
                                       f"{_fmt(positions[k])} in {labels[k]} and {_fmt(positions[k + 1])} in "
                                       f"{labels[k + 1]}) where the median spacing is {median:.3f} mm")
    spacing = float(along[-1] - along[0]) / (len(along) - 1)
    misplacement = np.abs(along - along[0] - spacing * np.arange(len(along)))
    if misplacement.max() > max(POSITION_ATOL_MM, SPACING_RTOL * spacing):
        k = int(misplacement.argmax())
        raise SeriesGeometryError(uid, f"non-uniform slice spacing: steps range from {steps.min():.4f} to "
                                       f"{steps.max():.4f} mm; {labels[k]} lies {misplacement[k]:.4f} mm off "
                                       f"the regular {spacing:.4f} mm grid")
    return spacing


def _single_slice_spacing(instance: _Instance, uid: str) -> float:
    """A single slice has no neighbour: SpacingBetweenSlices, else SliceThickness, else 1 mm."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            spacing = float(instance.text(keyword) or "nan")
        except ValueError:
            continue
        if np.isfinite(spacing) and spacing > 0:
            return spacing
    logger.warning("series %s: single slice without SpacingBetweenSlices or SliceThickness; using 1 mm", uid)
    return 1.0


def _check_in_plane(positions: np.ndarray, direction: np.ndarray, pixel_spacing: tuple[float, float],
                    ordered: Sequence[_Instance], uid: str) -> None:
    """Slices must be stacked straight along the normal (no shear such as gantry tilt)."""
    shift = np.abs((positions - positions[0]) @ direction[1:].T)  # (n, 2): along columns, along rows
    tolerance = np.maximum(POSITION_ATOL_MM, INPLANE_RTOL * np.asarray(pixel_spacing))
    if np.any(shift > tolerance):
        k = int((shift / tolerance).max(axis=1).argmax())
        raise SeriesGeometryError(uid, f"slices are not stacked along the normal: {ordered[k].label} is "
                                       f"shifted {_fmt(shift[k])} mm in-plane from {ordered[0].label} (gantry "
                                       "tilt or a sheared acquisition?); resample it before reading")


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


# -- step 4: pixels and rescale -------------------------------------------------------------


@dataclass(frozen=True)
class _Rescale:
    slopes: np.ndarray  # per slice, z order
    intercepts: np.ndarray
    int16_shift: int | None  # the common integral intercept when slope is 1 everywhere, else None


def _rescale_of(ordered: Sequence[_Instance], uid: str) -> _Rescale:
    slopes = np.array([_number(i, "RescaleSlope", 1.0, uid) for i in ordered])
    intercepts = np.array([_number(i, "RescaleIntercept", 0.0, uid) for i in ordered])
    exact = bool(np.all(slopes == 1.0) and np.all(intercepts == intercepts[0]) and intercepts[0].is_integer()
                 and abs(intercepts[0]) < 2**31)
    return _Rescale(slopes, intercepts, int(intercepts[0]) if exact else None)


def _number(instance: _Instance, keyword: str, default: float, uid: str) -> float:
    text = instance.text(keyword)
    try:
        value = float(text) if text else default
    except ValueError as exc:
        raise SeriesError(uid, f"{instance.label}: {keyword} {text!r} is not a number") from exc
    if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
        raise SeriesError(uid, f"{instance.label}: {keyword} {text!r} is not usable")
    return value


def _read_pixels(ordered: Sequence[_Instance], rescale: _Rescale, uid: str) -> np.ndarray:
    """Rescaled values of every slice in one preallocated ``(z, y, x)`` array."""
    first = ordered[0].attrs
    signed = first.get("PixelRepresentation", 0) == 1
    stored = np.dtype(f"<{'i' if signed else 'u'}{first['BitsAllocated'] // 8}")
    raw = np.empty((len(ordered), first["Rows"], first["Columns"]), dtype=stored)
    in_place = rescale.int16_shift is not None and stored.itemsize == 2
    shift = np.int16(((rescale.int16_shift or 0) + 32768) % 65536 - 32768)  # the intercept modulo 2**16

    unused_bits = stored.itemsize * 8 - first.get("BitsStored", stored.itemsize * 8)

    def load(k: int) -> tuple[int, int]:
        """Read slice k; with an int16 result, add the intercept in place (modulo 2**16)."""
        _load_slice(ordered[k], raw[k], uid)
        if unused_bits:
            _drop_unused_bits(raw[k], unused_bits)
        low = int(raw[k].min()) if signed else 0
        high = int(raw[k].max())
        if in_place and shift:
            view = raw[k].view(np.int16)
            view += shift
        return low, high

    if len(ordered) > 1:
        with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
            ranges = list(pool.map(load, range(len(ordered))))
    else:
        ranges = [load(0)]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    fits = rescale.int16_shift is not None and -32768 <= low + rescale.int16_shift <= high + rescale.int16_shift <= 32767
    if fits:
        if in_place:
            return raw.view(np.int16)
        return (raw.astype(np.int32) + (rescale.int16_shift or 0)).astype(np.int16)
    if in_place and shift:
        raw.view(np.int16)[...] -= shift  # undo: modular addition is invertible
    return _to_float(raw, rescale)


def _drop_unused_bits(plane: np.ndarray, unused: int) -> None:
    """As pydicom does: clear the bits above HighBit, sign-extending signed values (in place)."""
    as_unsigned = plane.view(plane.dtype.str.replace("i", "u"))
    as_unsigned <<= unused
    plane >>= unused  # arithmetic shift for signed, logical for unsigned


def _to_float(raw: np.ndarray, rescale: _Rescale) -> np.ndarray:
    out = raw.astype(np.float32)
    out *= rescale.slopes.astype(np.float32)[:, None, None]
    out += rescale.intercepts.astype(np.float32)[:, None, None]
    return out


def _load_slice(instance: _Instance, out: np.ndarray, uid: str) -> None:
    """Stored values of one instance into ``out``: raw bytes when possible, else decoded."""
    if instance.pixel_offset is not None:
        assert instance.path is not None
        with open(instance.path, "rb", buffering=0) as fp:
            fp.seek(instance.pixel_offset)
            got = fp.readinto(memoryview(out).cast("B"))
        if got != out.nbytes:
            raise PixelDataError(uid, f"{instance.label}: pixel data truncated ({got} of {out.nbytes} bytes)")
        return
    ds = instance.dataset
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ds is not None and (syntax in _NATIVE_LE or (syntax is None and ds.original_encoding[1] is not False)):
        data = ds.PixelData  # in-memory native pixels (little endian when no syntax is known)
        if isinstance(data, bytes) and len(data) in (out.nbytes, out.nbytes + 1):
            out[...] = np.frombuffer(data, dtype=out.dtype, count=out.size).reshape(out.shape)
            return
    _decode_into(instance, out, uid)


def _decode_into(instance: _Instance, out: np.ndarray, uid: str) -> None:
    """Decode one instance with pydicom's pixel data handlers."""
    try:
        ds = instance.dataset if instance.dataset is not None else dcmread(instance.path, force=True)
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise PixelDataError(uid, f"{instance.label}: pixel data cannot be decoded ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})") from exc
    if pixels.shape != out.shape:
        raise PixelDataError(uid, f"{instance.label}: decoded pixels have shape {pixels.shape}, expected "
                                  f"{out.shape} (Rows, Columns)")
    out[...] = pixels
