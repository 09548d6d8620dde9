"""Read one DICOM image series into a :class:`~medimg_kernel.volume.Volume`.

:func:`read_series` accepts a DICOMweb origin (:class:`~medimg_kernel.dicomweb.DICOMwebProtocol`),
a directory, a list of files or a list of :class:`pydicom.dataset.Dataset`, checks that
the instances form one regular stack of single-frame greyscale slices and returns the
voxels in Hounsfield units (or the modality's rescaled units) with their LPS geometry.

Header collection, the checks of each instance and of the whole stack are here; the
per-instance record is :class:`~medimg_kernel.series.instance.Instance`; sorting along the
slice normal, spacing, tolerances and the direction matrix are in
:mod:`medimg_kernel.series.geometry` (its docstring states the geometry rules and the
tolerance constants); reading and rescaling the pixel data (the fast ``readinto`` path for
uncompressed files, decoding otherwise) is in :mod:`medimg_kernel.series.pixels`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from ..collector import collector_paused
from ..dicom_header import NEED_MORE, read_header
from ..dicomweb import DICOMwebProtocol
from ..errors import (
    ConfigurationError,
    DicomFileError,
    MixedSeriesError,
    NotAnImageError,
    PixelDataError,
    SeriesError,
    UnsupportedImageError,
)
from ..volume import Volume
from .geometry import StackGeometry, stack_geometry
from .instance import TEXT_TAGS, US_TAGS, Instance
from .pixels import PIXEL_DATA, raw_pixel_offset, read_pixels, rescale_of

logger = logging.getLogger(__name__)

__all__ = ["read_series", "read_headers"]

#: Pixel data tags (float, double, integer) removed from the headers kept in ``Volume.sources``.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})
#: Elements longer than this (bytes) are not loaded while parsing headers.
_DEFER_BYTES = 4096
#: First read (bytes) of a file by read_headers: a CT header is ~2-6 KiB; longer headers are read on.
HEADER_READ_BYTES = 16384
#: Segmentation and label-map segmentation storage: pixel data, but not images.
_NOT_IMAGES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})


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
    geometry = stack_geometry(instances, uid)
    ordered = [instances[k] for k in geometry.order]
    array = read_pixels(ordered, rescale_of(ordered, uid), uid)
    return _volume(array, geometry, ordered)


def read_headers(files: Sequence[str | os.PathLike[str]]) -> list[Dataset]:
    """The headers of DICOM files (every element before the pixel data), in the order given.

    For the source instances of a derived object, such as the CT slices a SEG references
    (:func:`medimg_kernel.seg.write_seg` needs their headers only). Equivalent to
    ``pydicom.dcmread(path, stop_before_pixels=True)`` for each file, but faster for the common
    case: each file is read with one bounded read (:data:`HEADER_READ_BYTES`, read on when the
    header is longer) and explicit VR little endian headers are parsed from those bytes
    (:func:`medimg_kernel.dicom_header.read_header`); other files (implicit VR, big endian,
    deflated, undefined-length sequences, no file meta) are read by pydicom.

    Parameters
    ----------
    files
        Paths of DICOM files (Part 10, or a raw data set without preamble and file meta).

    Returns
    -------
    list of pydicom.dataset.Dataset
        One :class:`~pydicom.dataset.FileDataset` per file, without pixel data; values are
        decoded when first accessed, as with ``dcmread``.

    Raises
    ------
    ConfigurationError
        ``files`` is a single path instead of a sequence of paths.
    DicomFileError
        A file cannot be opened, is empty, is not DICOM (the same errors as :func:`read_series`),
        or has no SOPClassUID or SOPInstanceUID.
    """
    if isinstance(files, (str, bytes, os.PathLike)):
        raise ConfigurationError("read_headers takes a sequence of file paths; got a single path "
                                 f"{os.fspath(files)!r}: pass [path]")
    with collector_paused():  # ~70 objects per header, none of them garbage
        return [_header_from_file(Path(path)) for path in files]


def _header_from_file(path: Path) -> Dataset:
    """One file's header: bounded reads parsed by ``read_header``, else ``dcmread``."""
    try:
        with open(path, "rb") as fp:
            requested = HEADER_READ_BYTES
            data = fp.read(requested)
            if not data:
                raise DicomFileError(path, "empty file (0 bytes), not DICOM")
            while (ds := read_header(data, filename=str(path), complete=len(data) < requested)) is NEED_MORE:
                requested *= 4
                data += fp.read(requested - len(data))
            if ds is None:
                fp.seek(0)
                ds = _dcmread(fp, path, headers_only=True)
    except OSError as exc:
        raise DicomFileError(path, f"cannot be opened ({exc.strerror or exc})") from exc
    if 0x00080016 not in ds or 0x00080018 not in ds:
        raise DicomFileError(path, "no SOPClassUID or SOPInstanceUID: not a DICOM instance, "
                                   "or the file is truncated or damaged")
    return ds  # type: ignore[return-value]


def _volume(array: np.ndarray, geometry: StackGeometry, ordered: list[Instance]) -> Volume:
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


def _collect(source: Any, study_uid: str | None, series_uid: str | None) -> list[Instance]:
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


def _from_file(path: Path) -> Instance:
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
    offset = raw_pixel_offset(ds, attrs, path, size)
    has_pixels = PIXEL_DATA in ds
    for tag in _PIXEL_TAGS.intersection(ds.keys()):
        del ds[tag]
    return Instance(str(path), ds, attrs, has_pixels, path=path, pixel_offset=offset)


def _dcmread(fp: Any, path: Path, *, headers_only: bool = False) -> Dataset:
    """``dcmread`` with pixel data deferred (or not read: ``headers_only``); files without
    preamble/file meta are read raw."""
    options: dict[str, Any] = {"stop_before_pixels": True} if headers_only else {"defer_size": _DEFER_BYTES}
    try:
        return dcmread(fp, **options)
    except InvalidDicomError:
        fp.seek(0)
        try:
            with warnings.catch_warnings():  # guessing the encoding of non-DICOM bytes warns a lot
                warnings.simplefilter("ignore")
                ds = dcmread(fp, force=True, **options)
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
        for keyword, tag in TEXT_TAGS.items():
            elem = ds.get_item(tag, keep_deferred=True)
            if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
                attrs[keyword] = [v.strip(" \x00") for v in elem.value.decode("latin-1").split("\\")]
            elif elem is not None:
                value = ds[tag].value
                values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
                attrs[keyword] = [str(v) for v in values if v is not None and v != ""]
        for keyword, tag in US_TAGS.items():
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


def _from_dataset(ds: Dataset, n: int) -> Instance:
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
    return Instance(label, header, _attributes(ds, label), PIXEL_DATA in ds, dataset=ds)


# -- step 2: select and check ------------------------------------------------------------------


def _select(instances: list[Instance], study_uid: str | None, series_uid: str | None) -> list[Instance]:
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


def _check_image(instance: Instance, uid: str) -> None:
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


def _check_consistent(instances: list[Instance], uid: str) -> None:
    """All instances share size, pixel format, frame of reference and modality."""
    for keyword in _SAME:
        values = Counter(str(i.attrs.get(keyword, "")) for i in instances)
        if len(values) > 1:
            common = values.most_common(1)[0][0]
            odd = next(i for i in instances if str(i.attrs.get(keyword, "")) != common)
            raise MixedSeriesError(uid, f"{keyword} differs between instances ({_listing(values)}), "
                                        f"e.g. in {odd.label}")
