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
  divided by the number of gaps, never SliceThickness or SpacingBetweenSlices alone
  (those are used only for a single-slice series: SpacingBetweenSlices, else
  SliceThickness, else 1 mm).
* Tolerances: orientation cosines agree within ``ORIENTATION_ATOL``; every slice lies
  within ``max(POSITION_ATOL_MM, SPACING_RTOL * spacing)`` of its place on the regular
  grid along the normal and within ``INPLANE_RTOL * pixel spacing`` of the first slice
  in the plane (positions rounded to ~6 significant digits pass); a step larger than
  ``GAP_FACTOR`` times the median spacing is a missing slice.

Uncompressed little-endian files are read without decoding: headers are parsed with
pixel data deferred, then the pixel bytes of each file are read straight into one
preallocated array. Other transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE, big
endian, deflate) are decoded by pydicom's pixel data handlers.
"""

from __future__ import annotations

import logging
import os
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
#: Absolute position tolerance along the normal (mm); closer slices are duplicates.
POSITION_ATOL_MM = 0.02
#: Relative tolerance of each slice's distance from its regular-grid place.
SPACING_RTOL = 0.02
#: In-plane shift allowed between slices, as a fraction of the pixel spacing.
INPLANE_RTOL = 0.1
#: A step larger than this many median spacings is a gap (missing slices).
GAP_FACTOR = 1.5

#: Pixel data tags removed from the headers kept in ``Volume.sources``.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_PIXEL_DATA = 0x7FE00010
#: Elements longer than this are not loaded while reading headers (bytes).
_DEFER_BYTES = 4096
_NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
#: SOP classes that carry pixel data but are not images of the patient.
_NOT_IMAGES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})
_IO_THREADS = 4
_INT16 = np.iinfo(np.int16)


@dataclass
class _Instance:
    """One source instance: where it came from, its header, where its pixels are."""

    label: str  # file path, or "instance <SOPInstanceUID>" for datasets
    header: Dataset  # without pixel data
    path: Path | None = None
    dataset: Dataset | None = None  # the caller's dataset, pixels included
    pixel_offset: int | None = None  # file offset of raw little-endian pixels (fast path)


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
        or a sequence of :class:`~pydicom.dataset.Dataset` (not modified).
    study_instance_uid
        Keep only instances of this study (required for DICOMweb).
    series_instance_uid
        Keep only instances of this series; needed when ``source`` holds several series
        (required for DICOMweb).

    Returns
    -------
    Volume
        ``array`` indexed ``[z, y, x]`` with RescaleSlope/RescaleIntercept applied
        (HU for CT): ``int16`` when every slice has slope 1 and the same integral
        intercept and the values fit, else ``float32``; ``z`` increases along the
        slice normal (row cosine × column cosine). ``spacing`` ``(dz, dy, dx)`` in mm,
        ``origin`` the LPS position (mm) of the first slice's first voxel,
        ``direction`` rows = LPS unit vectors of the z, y, x axes (see
        :mod:`medimg_kernel.volume`), ``sources`` the headers without pixel data in
        ``z`` order, and the study, series and frame-of-reference UIDs and modality.

    Raises
    ------
    ConfigurationError
        ``source`` is of an unsupported kind, or DICOMweb without both UIDs.
    DicomFileError
        A file is not readable DICOM (not DICOM, truncated header, no SOP Class UID).
    MixedSeriesError
        Several series, orientations, sizes, pixel spacings, frames of reference or
        modalities are mixed.
    SeriesGeometryError
        Missing or duplicate slices, uneven spacing, sheared stacks, missing geometry.
    NotAnImageError
        An instance is not an image (SR, SEG, RT plan, ...).
    UnsupportedImageError
        Multi-frame or enhanced instances, colour images, modality LUT sequences.
    PixelDataError
        Pixel data is missing, truncated or cannot be decoded.
    """
    instances = _select(_collect(source, study_instance_uid, series_instance_uid), source,
                        study_instance_uid, series_instance_uid)
    uid = str(instances[0].header.SeriesInstanceUID)
    for instance in instances:
        _check_image(instance, uid)
    _check_consistent(instances, uid)
    geometry = _stack_geometry([i.header for i in instances], [i.label for i in instances], uid)
    ordered = [instances[k] for k in geometry.order]
    array = _apply_rescale(_read_pixels(ordered, uid), [i.header for i in ordered], uid)
    return _volume(array, geometry, ordered)


def _volume(array: np.ndarray, geometry: _StackGeometry, ordered: list[_Instance]) -> Volume:
    first = ordered[0].header
    volume = Volume(
        array=array,
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        sources=tuple(i.header for i in ordered),
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        modality=str(first.get("Modality", "")),
    )
    logger.debug("read series %s: shape %s, spacing %s mm, dtype %s",
                 volume.series_instance_uid, volume.shape, volume.spacing, array.dtype)
    return volume


# -- step 1: collect headers ------------------------------------------------------------


def _collect(source: Any, study_uid: str | None, series_uid: str | None) -> list[_Instance]:
    """Headers of every instance in ``source``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")
            if not files:
                raise SeriesError(series_uid, f"directory {path} holds no files")
            return [_header_from_file(p) for p in files]
        return [_header_from_file(path)]
    if isinstance(source, DICOMwebProtocol):
        if not study_uid or not series_uid:
            raise ConfigurationError(
                "read_series from a DICOMweb source needs study_instance_uid and series_instance_uid"
            )
        return [_header_from_dataset(ds, n) for n, ds in enumerate(source.iter_series(study_uid, series_uid))]
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        if all(isinstance(item, Dataset) for item in source):
            return [_header_from_dataset(ds, n) for n, ds in enumerate(source)]
        if all(isinstance(item, (str, os.PathLike)) for item in source):
            return [_header_from_file(Path(p)) for p in source]
    raise ConfigurationError(
        f"read_series source must be a DICOMweb client, a directory, a file path, or a sequence "
        f"of file paths or of pydicom Datasets; got {type(source).__name__}"
    )


def _header_from_file(path: Path) -> _Instance:
    """Parse one file's header; locate its pixel bytes when they can be read raw."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                raise DicomFileError(path, "empty file (0 bytes): not DICOM")
            ds = _dcmread_tolerant(fp, path)
    except OSError as exc:
        raise DicomFileError(path, f"cannot be opened ({exc.strerror or exc})") from exc
    if "SOPClassUID" not in ds or "SeriesInstanceUID" not in ds:
        raise DicomFileError(path, "no SOPClassUID or SeriesInstanceUID: not a DICOM image "
                                   "instance, or the file is truncated or damaged")
    offset = _raw_pixel_offset(ds, path, size)
    header = ds
    for tag in _PIXEL_TAGS & set(ds.keys()):
        del header[tag]
    return _Instance(label=str(path), header=header, path=path, pixel_offset=offset)


def _dcmread_tolerant(fp: Any, path: Path) -> Dataset:
    """``dcmread``, retrying with ``force=True`` for files without preamble or file meta."""
    try:
        return dcmread(fp, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        fp.seek(0)
        try:
            ds = dcmread(fp, defer_size=_DEFER_BYTES, force=True)
            logger.debug("%s: read without DICOM file meta information", path)
            return ds
        except Exception as exc:  # noqa: BLE001 - any parser failure means "not DICOM"
            raise DicomFileError(path, "not a DICOM file (no 'DICM' prefix and not parsable "
                                       f"as a raw data set: {type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise DicomFileError(path, f"cannot be parsed as DICOM ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); the file may be truncated or damaged") from exc


def _raw_pixel_offset(ds: Dataset, path: Path, size: int) -> int | None:
    """File offset of uncompressed little-endian pixel data, else ``None`` (decode instead)."""
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True) if _PIXEL_DATA in ds else None
    if not isinstance(elem, RawDataElement) or elem.value is not None or elem.length == 0xFFFFFFFF:
        return None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    implicit, little = ds.original_encoding
    if (syntax is not None and syntax not in _NATIVE_LITTLE_ENDIAN) or not little:
        return None
    if elem.value_tell + elem.length > size:
        uid = str(ds.get("SeriesInstanceUID", "")) or None
        raise PixelDataError(uid, f"{path}: pixel data truncated: the element claims {elem.length} "
                                  f"bytes at offset {elem.value_tell} but the file has {size} bytes")
    return int(elem.value_tell)


def _header_from_dataset(ds: Dataset, n: int) -> _Instance:
    """Header copy of a caller's dataset (which is left untouched)."""
    if not isinstance(ds, Dataset):
        raise ConfigurationError(f"DICOMweb source yielded {type(ds).__name__}, not a Dataset")
    label = f"instance {ds.get('SOPInstanceUID', f'#{n}')}"
    header = Dataset({tag: ds.get_item(tag, keep_deferred=True) for tag in ds.keys() if tag not in _PIXEL_TAGS})
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        header.set_original_encoding(implicit, little, ds.original_character_set)
    if "SOPClassUID" not in header or "SeriesInstanceUID" not in header:
        raise DicomFileError(label, "no SOPClassUID or SeriesInstanceUID: not a DICOM image instance")
    return _Instance(label=label, header=header, dataset=ds)


# -- step 2: select and check ---------------------------------------------------------------


def _select(instances: list[_Instance], source: Any, study_uid: str | None,
            series_uid: str | None) -> list[_Instance]:
    """Keep the requested study/series; refuse a mixture when none was requested."""
    if not instances:
        raise SeriesError(series_uid, "no instances were given or returned by the source")
    if study_uid:
        instances = [i for i in instances if str(i.header.get("StudyInstanceUID", "")) == study_uid]
    found = Counter(str(i.header.SeriesInstanceUID) for i in instances)
    if series_uid:
        kept = [i for i in instances if str(i.header.SeriesInstanceUID) == series_uid]
        if not kept:
            raise SeriesError(series_uid, f"no instance of this series (study filter: {study_uid or 'none'}) "
                                          f"in the source; series found: {_listing(found)}")
        return kept
    if not instances:
        raise SeriesError(None, f"no instance of study {study_uid} in the source")
    if len(found) > 1:
        uid = found.most_common(1)[0][0]
        raise MixedSeriesError(uid, f"the source mixes {len(found)} series ({_listing(found)}); "
                                    "pass series_instance_uid= to choose one")
    return instances


def _listing(counter: Counter[Any]) -> str:
    return ", ".join(f"{key} ({count} instances)" for key, count in counter.most_common(8))


def _check_image(instance: _Instance, uid: str) -> None:
    """Refuse non-images and images this reader cannot stack."""
    h = instance.header
    sop = UID(str(h.SOPClassUID))
    what = f"{instance.label} (SOP class {sop.name})"
    has_pixels = instance.pixel_offset is not None or _has_pixel_data(instance)
    if sop in _NOT_IMAGES or (not has_pixels and "Rows" not in h):
        raise NotAnImageError(uid, f"{what} is not an image; read_series reads image series only "
                                   "(use read_seg / read_sr for segmentations and reports)")
    frames = h.get("NumberOfFrames", 1)
    if (frames not in (None, "") and int(frames) > 1) or "SharedFunctionalGroupsSequence" in h:
        raise UnsupportedImageError(uid, f"{what} is a multi-frame or enhanced object ({frames} frames); "
                                         "read_series supports single-frame images only: convert it to "
                                         "single-frame instances (e.g. with highdicom or dcmtk) first")
    if int(h.get("SamplesPerPixel", 1) or 1) != 1 or not str(h.get("PhotometricInterpretation",
                                                                  "MONOCHROME2")).startswith("MONOCHROME"):
        raise UnsupportedImageError(uid, f"{what} is a colour image (PhotometricInterpretation "
                                         f"{h.get('PhotometricInterpretation')}); only greyscale is supported")
    if "ModalityLUTSequence" in h and "RescaleSlope" not in h:
        raise UnsupportedImageError(uid, f"{what} uses a Modality LUT Sequence, which is not supported")
    if not has_pixels:
        raise PixelDataError(uid, f"{what} has no pixel data")
    if int(h.get("BitsAllocated", 0) or 0) not in (8, 16, 32):
        raise UnsupportedImageError(uid, f"{what} has BitsAllocated {h.get('BitsAllocated')}; "
                                         "8, 16 or 32 are supported")


def _has_pixel_data(instance: _Instance) -> bool:
    if instance.dataset is not None:
        return _PIXEL_DATA in instance.dataset
    # files: the pixel element was removed from the header; reread lazily only if needed
    return instance.path is not None and _PIXEL_DATA in _reread(instance)


def _reread(instance: _Instance) -> Dataset:
    assert instance.path is not None
    try:
        return dcmread(instance.path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise DicomFileError(instance.path, f"cannot be re-read ({type(exc).__name__}); "
                                            "was it changed while reading?") from exc


_SAME = ("Rows", "Columns", "BitsAllocated", "PixelRepresentation", "FrameOfReferenceUID", "Modality")


def _check_consistent(instances: list[_Instance], uid: str) -> None:
    """All instances share size, pixel format, frame of reference and modality."""
    first = instances[0].header
    for keyword in _SAME:
        values = Counter(str(i.header.get(keyword, "")) for i in instances)
        if len(values) > 1:
            odd = next(i for i in instances if str(i.header.get(keyword, "")) != values.most_common(1)[0][0])
            raise MixedSeriesError(uid, f"{keyword} differs between instances ({_listing(values)}), "
                                        f"e.g. {odd.label} vs {instances[0].label}")
    if "Rows" not in first or "Columns" not in first:
        raise PixelDataError(uid, f"{instances[0].label} has no Rows/Columns")


# -- step 3: geometry --------------------------------------------------------------------


@dataclass(frozen=True)
class _StackGeometry:
    order: list[int]  # input indices in ascending position along the normal
    spacing: tuple[float, float, float]  # (dz, dy, dx) mm
    origin: tuple[float, float, float]  # LPS mm of the first slice's first voxel
    direction: np.ndarray  # rows: normal, column cosine, row cosine


def _stack_geometry(headers: Sequence[Dataset], labels: Sequence[str], uid: str) -> _StackGeometry:
    """Sort slices along the normal and derive spacing, origin and direction."""
    direction = _orientation(headers, labels, uid)
    dy, dx = _pixel_spacing(headers, labels, uid)
    positions = np.array([_numbers(h, "ImagePositionPatient", 3, label, uid) for h, label in zip(headers, labels)])
    order = np.argsort(positions @ direction[0], kind="stable")
    positions = positions[order]
    ordered_labels = [labels[k] for k in order]
    dz = _slice_spacing(positions, direction[0], ordered_labels, headers[int(order[0])], uid)
    _check_in_plane(positions, direction, (dy, dx), ordered_labels, uid)
    return _StackGeometry([int(k) for k in order], (dz, dy, dx), tuple(positions[0]), direction)


def _numbers(header: Dataset, keyword: str, count: int, label: str, uid: str) -> np.ndarray:
    """``count`` finite floats from a multi-valued DS attribute."""
    try:
        value = header.get(keyword)
        numbers = np.array([float(v) for v in (value if value is not None else [])], dtype=float)
    except (TypeError, ValueError) as exc:
        raise SeriesGeometryError(uid, f"{label}: {keyword} is not numeric") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise SeriesGeometryError(uid, f"{label}: {keyword} is missing or does not hold {count} numbers; "
                                       "read_series needs the slice geometry of every instance")
    return numbers


def _orientation(headers: Sequence[Dataset], labels: Sequence[str], uid: str) -> np.ndarray:
    """Orthonormal direction matrix (rows: normal, column cosine, row cosine) shared by all slices."""
    cosines = np.array([_numbers(h, "ImageOrientationPatient", 6, label, uid) for h, label in zip(headers, labels)])
    deviation = np.abs(cosines - cosines[0]).max(axis=1)
    if deviation.max() > ORIENTATION_ATOL:
        k = int(deviation.argmax())
        raise MixedSeriesError(uid, f"ImageOrientationPatient differs between slices: {labels[k]} has "
                                    f"{_fmt(cosines[k])}, {labels[0]} has {_fmt(cosines[0])}")
    row, col = cosines.mean(axis=0)[:3], cosines.mean(axis=0)[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise SeriesGeometryError(uid, f"ImageOrientationPatient {_fmt(cosines[0])} is not two orthogonal "
                                       "unit vectors")
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    return np.stack([np.cross(row, col), col, row])


def _pixel_spacing(headers: Sequence[Dataset], labels: Sequence[str], uid: str) -> tuple[float, float]:
    values = np.array([_numbers(h, "PixelSpacing", 2, label, uid) for h, label in zip(headers, labels)])
    if np.any(values <= 0):
        raise SeriesGeometryError(uid, f"{labels[int(np.argmin(values.min(axis=1)))]}: PixelSpacing must be positive")
    deviation = np.abs(values - values[0]).max(axis=1) / values[0].min()
    if deviation.max() > 1e-4:
        k = int(deviation.argmax())
        raise MixedSeriesError(uid, f"PixelSpacing differs between slices: {labels[k]} has {_fmt(values[k])} mm, "
                                    f"{labels[0]} has {_fmt(values[0])} mm")
    return float(values[0][0]), float(values[0][1])


def _slice_spacing(positions: np.ndarray, normal: np.ndarray, labels: Sequence[str],
                   first: Dataset, uid: str) -> float:
    """Spacing along the normal (mm) of sorted slices; refuses duplicates, gaps and uneven steps."""
    if len(positions) == 1:
        return _single_slice_spacing(first, labels[0], uid)
    along = positions @ normal
    steps = np.diff(along)
    if steps.min() <= POSITION_ATOL_MM:
        k = int(steps.argmin())
        raise SeriesGeometryError(uid, f"duplicate slice position {along[k]:.3f} mm along the normal "
                                       f"(LPS {_fmt(positions[k])}) in {labels[k]} and {labels[k + 1]}; the "
                                       "series may hold several acquisitions or temporal positions")
    median = float(np.median(steps))
    if steps.max() > GAP_FACTOR * median:
        k = int(steps.argmax())
        raise SeriesGeometryError(uid, f"missing slice(s): a {steps[k]:.3f} mm gap between positions "
                                       f"{along[k]:.3f} and {along[k + 1]:.3f} mm along the normal (LPS "
                                       f"{_fmt(positions[k])} and {_fmt(positions[k + 1])}; {labels[k]} and "
                                       f"{labels[k + 1]}) where the median spacing is {median:.3f} mm")
    spacing = float(along[-1] - along[0]) / (len(along) - 1)
    misplacement = np.abs(along - along[0] - spacing * np.arange(len(along)))
    if misplacement.max() > max(POSITION_ATOL_MM, SPACING_RTOL * spacing):
        k = int(misplacement.argmax())
        raise SeriesGeometryError(uid, f"non-uniform slice spacing: steps range from {steps.min():.4f} to "
                                       f"{steps.max():.4f} mm; {labels[k]} lies {misplacement[k]:.4f} mm off "
                                       f"the regular {spacing:.4f} mm grid")
    return spacing


def _single_slice_spacing(header: Dataset, label: str, uid: str) -> float:
    """A single slice has no neighbour: SpacingBetweenSlices, else SliceThickness, else 1 mm."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = header.get(keyword)
        try:
            spacing = float(value) if value not in (None, "") else 0.0
        except (TypeError, ValueError):
            spacing = 0.0
        if np.isfinite(spacing) and spacing > 0:
            return spacing
    logger.warning("series %s: single slice without SpacingBetweenSlices or SliceThickness; using 1 mm", uid)
    return 1.0


def _check_in_plane(positions: np.ndarray, direction: np.ndarray, pixel_spacing: tuple[float, float],
                    labels: Sequence[str], uid: str) -> None:
    """Slices must be stacked straight along the normal (no shear such as gantry tilt)."""
    shift = np.abs((positions - positions[0]) @ direction[1:].T)  # (n, 2): along columns, along rows
    tolerance = np.maximum(POSITION_ATOL_MM, INPLANE_RTOL * np.asarray(pixel_spacing))
    if np.any(shift > tolerance):
        k = int((shift / tolerance).max(axis=1).argmax())
        raise SeriesGeometryError(uid, f"slices are not stacked along the normal: {labels[k]} is shifted "
                                       f"{_fmt(shift[k])} mm in-plane from {labels[0]} (gantry tilt or a "
                                       "sheared acquisition?); resample it before reading")


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# -- step 4: pixels ----------------------------------------------------------------------


def _stored_dtype(header: Dataset) -> np.dtype[Any]:
    bits = int(header.BitsAllocated)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")


def _read_pixels(ordered: list[_Instance], uid: str) -> np.ndarray:
    """Stored values of every slice in one preallocated ``(z, y, x)`` array."""
    first = ordered[0].header
    raw = np.empty((len(ordered), int(first.Rows), int(first.Columns)), dtype=_stored_dtype(first))

    def fill(k: int) -> None:
        instance = ordered[k]
        if instance.pixel_offset is not None and _fast_path_ok(instance.header):
            _read_raw_into(instance, raw[k], uid)
        else:
            _decode_into(instance, raw[k], uid)

    if len(ordered) > 1:
        with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
            list(pool.map(fill, range(len(ordered))))  # list() re-raises the first error
    else:
        fill(0)
    return raw


def _fast_path_ok(header: Dataset) -> bool:
    """Raw bytes equal pixel values: all bits are stored, or values are unsigned."""
    bits_stored = int(header.get("BitsStored", header.BitsAllocated) or header.BitsAllocated)
    return bits_stored == int(header.BitsAllocated) or int(header.get("PixelRepresentation", 0) or 0) == 0


def _read_raw_into(instance: _Instance, out: np.ndarray, uid: str) -> None:
    assert instance.path is not None and instance.pixel_offset is not None
    buffer = memoryview(out).cast("B")
    with open(instance.path, "rb", buffering=0) as fp:
        fp.seek(instance.pixel_offset)
        got = fp.readinto(buffer)
    if got != out.nbytes:
        raise PixelDataError(uid, f"{instance.label}: pixel data truncated ({got} of {out.nbytes} bytes)")


def _decode_into(instance: _Instance, out: np.ndarray, uid: str) -> None:
    """Decode one instance with pydicom's pixel handlers into ``out``."""
    ds = instance.dataset if instance.dataset is not None else _reread(instance)
    if instance.dataset is not None and instance.pixel_offset is None and _native_le(ds):
        expected = out.nbytes
        data = ds.PixelData
        if isinstance(data, bytes) and len(data) >= expected:
            out[...] = np.frombuffer(data, dtype=out.dtype, count=out.size).reshape(out.shape)
            return
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise PixelDataError(uid, f"{instance.label}: pixel data cannot be decoded "
                                  f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if pixels.shape != out.shape:
        raise PixelDataError(uid, f"{instance.label}: decoded pixel array has shape {pixels.shape}, "
                                  f"expected {out.shape} (Rows, Columns)")
    out[...] = pixels


def _native_le(ds: Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return syntax in _NATIVE_LITTLE_ENDIAN and _fast_path_ok(ds)


def _apply_rescale(raw: np.ndarray, headers: Sequence[Dataset], uid: str) -> np.ndarray:
    """Modality rescale; ``int16`` in place when exact, else ``float32``."""
    slopes = np.array([_ds_float(h, "RescaleSlope", 1.0, uid) for h in headers])
    intercepts = np.array([_ds_float(h, "RescaleIntercept", 0.0, uid) for h in headers])
    uniform = bool(np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]))
    slope, intercept = float(slopes[0]), float(intercepts[0])
    if uniform and slope == 1.0 and intercept.is_integer() and raw.dtype.itemsize <= 2:
        shift = int(intercept)
        if _INT16.min <= int(raw.min()) + shift and int(raw.max()) + shift <= _INT16.max:
            out = raw.view(np.int16) if raw.dtype.itemsize == 2 else raw.astype(np.int16)
            if shift:
                # int16 addition wraps modulo 2**16; the true result fits, so it is exact
                out += np.int16((shift + 32768) % 65536 - 32768)
            return out
    out = raw.astype(np.float32)
    if uniform:
        out *= np.float32(slope)
        out += np.float32(intercept)
    else:
        out *= slopes.astype(np.float32)[:, None, None]
        out += intercepts.astype(np.float32)[:, None, None]
    return out


def _ds_float(header: Dataset, keyword: str, default: float, uid: str) -> float:
    value = header.get(keyword)
    if value is None or value == "":
        return default
    try:
        result = float(value)
    except (TypeError, ValueError) as exc:
        raise SeriesError(uid, f"{keyword} {value!r} is not a number") from exc
    if not np.isfinite(result) or (keyword == "RescaleSlope" and result == 0):
        raise SeriesError(uid, f"{keyword} {value!r} is not usable")
    return result


