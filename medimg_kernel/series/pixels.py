"""Pixel data of a sorted stack of slices, rescaled, in one ``(z, y, x)`` array.

Used by :func:`medimg_kernel.series.read_series` once the slices are checked and
sorted. Uncompressed little-endian files are not decoded: their headers are parsed
with the pixel data deferred (:func:`raw_pixel_offset` finds where the pixel bytes
start), then each file's pixel bytes are read straight into one preallocated array (a
few threads overlap the reads) and the rescale is applied in place. Other transfer
syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE, big endian, deflate) are decoded by pydicom's
pixel data handlers (pylibjpeg, pyjpegls).

The result holds RescaleSlope/RescaleIntercept applied: ``int16`` when every slice has
slope 1 and the same integral intercept and the values fit, else ``float32``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import PixelDataError, SeriesError
from .instance import Instance

__all__ = ["PIXEL_DATA", "Rescale", "raw_pixel_offset", "rescale_of", "read_pixels"]

#: The (integer) Pixel Data tag.
PIXEL_DATA = 0x7FE00010
#: Transfer syntaxes whose pixel bytes are read as they are, without a decoder.
_NATIVE_LE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_IO_THREADS = 4


def raw_pixel_offset(ds: Dataset, attrs: dict[str, Any], path: Path, size: int) -> int | None:
    """File offset of uncompressed little-endian pixel data, else ``None`` (decode instead).

    Parameters
    ----------
    ds
        The file's header, parsed with the pixel data deferred.
    attrs
        The instance's attributes (:attr:`Instance.attrs`), for the SeriesInstanceUID.
    path, size
        The file and its size in bytes.

    Raises
    ------
    PixelDataError
        The pixel data element claims more bytes than the file has.
    """
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if not isinstance(elem, RawDataElement) or elem.value_tell is None or elem.length == 0xFFFFFFFF:
        return None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if (syntax is not None and syntax not in _NATIVE_LE) or not ds.original_encoding[1]:
        return None
    if elem.value_tell + elem.length > size:
        raise PixelDataError(attrs["SeriesInstanceUID"][0], f"{path}: pixel data truncated: the element "
                             f"claims {elem.length} bytes at offset {elem.value_tell}, the file has {size}")
    return int(elem.value_tell)


@dataclass(frozen=True)
class Rescale:
    """RescaleSlope and RescaleIntercept of each slice, and whether the result can be ``int16``."""

    slopes: np.ndarray  # per slice, z order
    intercepts: np.ndarray
    int16_shift: int | None  # the common integral intercept when slope is 1 everywhere, else None


def rescale_of(ordered: Sequence[Instance], uid: str) -> Rescale:
    """The rescale of each slice (slope 1, intercept 0 when absent).

    Parameters
    ----------
    ordered
        The instances in ``z`` order.
    uid
        The SeriesInstanceUID, for error messages.

    Raises
    ------
    SeriesError
        A slope or intercept is not a finite number, or a slope is 0.
    """
    slopes = np.array([_number(i, "RescaleSlope", 1.0, uid) for i in ordered])
    intercepts = np.array([_number(i, "RescaleIntercept", 0.0, uid) for i in ordered])
    exact = bool(np.all(slopes == 1.0) and np.all(intercepts == intercepts[0]) and intercepts[0].is_integer()
                 and abs(intercepts[0]) < 2**31)
    return Rescale(slopes, intercepts, int(intercepts[0]) if exact else None)


def _number(instance: Instance, keyword: str, default: float, uid: str) -> float:
    text = instance.text(keyword)
    try:
        value = float(text) if text else default
    except ValueError as exc:
        raise SeriesError(uid, f"{instance.label}: {keyword} {text!r} is not a number") from exc
    if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
        raise SeriesError(uid, f"{instance.label}: {keyword} {text!r} is not usable")
    return value


def read_pixels(ordered: Sequence[Instance], rescale: Rescale, uid: str) -> np.ndarray:
    """Rescaled values of every slice in one preallocated ``(z, y, x)`` array.

    Parameters
    ----------
    ordered
        The checked instances in ``z`` order.
    rescale
        Their rescale (:func:`rescale_of`).
    uid
        The SeriesInstanceUID, for error messages.

    Returns
    -------
    numpy.ndarray
        ``int16`` when every slice has slope 1 and the same integral intercept and the
        values fit, else ``float32``.

    Raises
    ------
    PixelDataError
        Pixel data is truncated or cannot be decoded.
    """
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


def _to_float(raw: np.ndarray, rescale: Rescale) -> np.ndarray:
    out = raw.astype(np.float32)
    out *= rescale.slopes.astype(np.float32)[:, None, None]
    out += rescale.intercepts.astype(np.float32)[:, None, None]
    return out


def _load_slice(instance: Instance, out: np.ndarray, uid: str) -> None:
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


def _decode_into(instance: Instance, out: np.ndarray, uid: str) -> None:
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
