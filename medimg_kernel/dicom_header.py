"""A DICOM header in explicit VR little endian, read into a pydicom ``FileDataset`` without ``dcmread``.

WADO-RS retrieval decodes one header per instance (200 for a CT series), and a SEG's sources are
200 files' headers (:func:`medimg_kernel.series.read_headers`). ``pydicom.dcmread`` spends
~0.4 ms on a 1 KB header (file-like reads per element, three ``read_dataset`` passes, and eager
conversion of the transfer syntax and character set); this module walks the bytes once with
``struct`` and builds the same raw elements (:class:`~pydicom.dataelem.RawDataElement`,
converted lazily by pydicom on access, exactly as after ``dcmread``) in ~0.1 ms.

It only accepts what it can read exactly as ``dcmread(..., force=True, stop_before_pixels=True)``
would: the File Meta group (with or without the 128-byte preamble), then a top-level dataset in
Explicit VR Little Endian, every element of a known VR and a defined length (sequences of defined
length stay raw, as pydicom keeps them), no command group. Anything else returns ``None`` and the
caller takes ``dcmread``. The header ends at the first top-level pixel data element (float,
double or integer) or at the end of the bytes given; given only the start of a file
(``complete=False``), :data:`NEED_MORE` says the header goes on.

:func:`native_pixel_data_offset` finds where the native pixel data of a part starts, so the
multipart reader can receive the pixel bytes straight into their own ``bytes`` object.
"""

from __future__ import annotations

import io
import struct
from typing import Final

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

#: Returned by :func:`read_header` when the bytes end inside the header and more of the object exists.
NEED_MORE: Final = "need more bytes"
#: (7FE0,0010) Pixel Data, little endian.
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
#: Float, double float and integer pixel data: where a header ends.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: Bytes of a (7FE0,0010) element's header in explicit VR: tag, VR, 2 reserved, 4-byte length.
PIXEL_DATA_ELEMENT_HEADER_BYTES = 12
#: (0002,0010) Transfer Syntax UID value of Explicit VR Little Endian, as stored (without padding).
_EXPLICIT_VR_LITTLE_ENDIAN = b"1.2.840.10008.1.2.1"
_TRANSFER_SYNTAX_UID = 0x00020010
_SPECIFIC_CHARACTER_SET = 0x00080005

_ELEMENT = struct.Struct("<HH2sH").unpack_from
_LENGTH_32 = struct.Struct("<L").unpack_from
#: VR as stored → (VR, whether a 4-byte length follows 2 reserved bytes).
_VRS = {str(vr).encode("ascii"): (str(vr), vr in EXPLICIT_VR_LENGTH_32) for vr in VR}
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: BaseTag objects reused across headers (immutable ints); bounded.
_TAGS: dict[int, BaseTag] = {}
_MAX_CACHED_TAGS = 8192
#: Encodings (as pydicom converts them) by raw Specific Character Set value; bounded.
_ENCODINGS: dict[bytes, str | list[str]] = {}
_MAX_CACHED_ENCODINGS = 64
_new_tuple = tuple.__new__


def native_pixel_data_offset(prefix: bytes, part_length: int) -> int | None:
    """Offset (bytes) of a native (7FE0,0010) element that runs to the end of a part, or None.

    ``prefix`` holds the first bytes of a part of ``part_length`` bytes. The element must be
    OB or OW with a defined length ending exactly at ``part_length``: then nothing follows the
    pixel data (encapsulated data has an undefined length and never matches). An occurrence of
    the tag's bytes inside a value is ruled out by :func:`read_header` later (its elements must
    end exactly at this offset) and by ``dcmread`` in the caller's fallback.
    """
    index = prefix.find(PIXEL_DATA_TAG)
    while 0 <= index and index + PIXEL_DATA_ELEMENT_HEADER_BYTES <= len(prefix):
        vr, reserved, (length,) = prefix[index + 4 : index + 6], prefix[index + 6 : index + 8], _LENGTH_32(prefix, index + 8)
        if vr in (b"OB", b"OW") and reserved == b"\x00\x00" \
                and length == part_length - index - PIXEL_DATA_ELEMENT_HEADER_BYTES:
            return index
        index = prefix.find(PIXEL_DATA_TAG, index + 1)
    return None


def read_header(data: bytes, *, filename: str | None = None, complete: bool = True,
                exact_end: bool = False) -> FileDataset | str | None:
    """The header of the DICOM object whose bytes start ``data``, as ``dcmread`` reads it; or None.

    Parameters
    ----------
    data
        The object's bytes from its start: a Part 10 file (preamble, ``DICM``) or a WADO-RS part
        (File Meta group first), up to its pixel data or beyond.
    filename
        Recorded as the dataset's ``filename`` (and its modification time as ``timestamp``), as
        ``dcmread(path)`` does; without it, the dataset's file is a ``BytesIO`` of ``data``.
    complete
        Whether ``data`` runs to the object's end or exactly to its pixel data. When False, bytes
        that end inside the header give :data:`NEED_MORE`.
    exact_end
        ``data`` must hold the header and nothing else (its elements end exactly at its end):
        None otherwise. For a header cut from a part where its pixel data was found.

    Returns
    -------
    pydicom.dataset.FileDataset or str or None
        What ``pydicom.dcmread(..., force=True, stop_before_pixels=True)`` returns (same class,
        file meta, raw elements with the same offsets, original encoding); :data:`NEED_MORE`; or
        None when the header needs pydicom's general reader (see the module docstring).
    """
    end = len(data)
    if end < 132 and not complete:
        return NEED_MORE
    start = 132 if data[128:132] == b"DICM" else 0
    if end - start < 8 or data[start : start + 2] != b"\x02\x00":
        return None  # no File Meta group first: dcmread decides
    meta, position = _elements(data, start, end, file_meta=True, complete=complete)
    if meta is None or meta is NEED_MORE:
        return meta  # type: ignore[return-value]
    syntax = meta.get(_TRANSFER_SYNTAX_UID)  # type: ignore[union-attr]
    if syntax is None or syntax.VR != "UI" or (syntax.value or b"").rstrip(b"\x00 ") != _EXPLICIT_VR_LITTLE_ENDIAN:
        return None
    elements, position = _elements(data, position, end, file_meta=False, complete=complete)
    if elements is None or elements is NEED_MORE or (exact_end and position != end):
        return None if exact_end else elements  # type: ignore[return-value]
    encoding = _encoding(elements.get(_SPECIFIC_CHARACTER_SET))  # type: ignore[union-attr]
    if encoding is None:
        return None
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True, default_encoding)
    for tag in (next(iter(meta)), 0x00020000, _TRANSFER_SYNTAX_UID):  # type: ignore[arg-type]
        if tag in file_meta:
            file_meta[tag]  # dcmread converts these while reading: the same objects
    source = filename if filename is not None else io.BytesIO(data)
    dataset = FileDataset(source, elements, data[:128] if start else None, file_meta, False, True)  # type: ignore[arg-type]
    dataset.set_original_encoding(False, True, encoding)
    if _SPECIFIC_CHARACTER_SET in elements:  # type: ignore[operator]
        dataset[_SPECIFIC_CHARACTER_SET]  # dcmread converts it while reading, as here
    return dataset


def _elements(buf: bytes, position: int, end: int, *, file_meta: bool,
              complete: bool = True) -> tuple[dict[BaseTag, RawDataElement] | str | None, int]:
    """Raw elements from ``position``: group 2 only (``file_meta``) or the data set up to its pixel data
    (none of groups 0-2); None if unsupported, :data:`NEED_MORE` if ``buf`` ends inside them and
    ``complete`` is False."""
    out: dict[BaseTag, RawDataElement] = {}
    tags, vrs, unpack, unpack_length, new = _TAGS, _VRS, _ELEMENT, _LENGTH_32, _new_tuple
    short = None if complete else NEED_MORE  # what bytes that end inside an element mean
    while position < end:
        if position + 8 > end:
            return short, position
        group, element, vr_bytes, length = unpack(buf, position)
        if file_meta:
            if group != 2:
                break
        elif group <= 2 or group == 0xFFFE:
            return None, position  # command group, file meta out of place, or a delimiter
        elif group == 0x7FE0 and (group << 16 | element) in _PIXEL_TAGS:
            return out, position
        known = vrs.get(vr_bytes)
        if known is None:
            return None, position  # implicit VR or an unknown VR: dcmread's heuristics apply
        vr, long_length = known
        if long_length:
            if position + 12 > end:
                return short, position
            (length,) = unpack_length(buf, position + 8)
            if length == _UNDEFINED_LENGTH:
                return None, position
            position += 12
        else:
            position += 8
        following = position + length
        if following > end:
            return short, position
        number = group << 16 | element
        tag = tags.get(number)
        if tag is None:
            tag = BaseTag(number)
            if len(tags) < _MAX_CACHED_TAGS:
                tags[number] = tag
        value = buf[position:following] if length else empty_value_for_VR(vr, raw=True)
        out[tag] = new(RawDataElement, (tag, vr, length, value, position, False, True, True, False))
        position = following
    if file_meta and position >= end:
        return short, position  # nothing after the File Meta group
    if not complete and not file_meta:
        return NEED_MORE, position  # the bytes ended between elements: more may follow
    return out, position


def _encoding(specific_character_set: RawDataElement | None) -> str | list[str] | None:
    """The dataset's character encoding, as ``read_dataset`` derives it (a fresh list each time).

    None for an empty (0008,0005), where pydicom's own rules (parent encoding) take over.
    """
    if specific_character_set is None:
        return default_encoding
    raw = specific_character_set.value
    if not raw:
        return None
    encoding = _ENCODINGS.get(raw)
    if encoding is None:
        encoding = convert_encodings(convert_raw_data_element(specific_character_set).value)
        if len(_ENCODINGS) < _MAX_CACHED_ENCODINGS:
            _ENCODINGS[raw] = encoding
    return list(encoding) if isinstance(encoding, list) else encoding
