"""A DICOM header in explicit VR little endian, read into a pydicom ``FileDataset`` without ``dcmread``.

WADO-RS retrieval decodes one header per instance (200 for a CT series). ``pydicom.dcmread``
spends ~0.4 ms on a 1 KB header (file-like reads per element, three ``read_dataset`` passes,
and eager conversion of the transfer syntax and character set); this module walks the bytes
once with ``struct`` and builds the same raw elements (:class:`~pydicom.dataelem.RawDataElement`,
converted lazily by pydicom on access, exactly as after ``dcmread``) in ~0.1 ms.

It only accepts what it can read exactly as ``dcmread(..., force=True, stop_before_pixels=True)``
would: the File Meta group (with or without the 128-byte preamble), then a top-level dataset in
Explicit VR Little Endian, every element of a known VR and a defined length (sequences of defined
length stay raw, as pydicom keeps them), no command group. Anything else returns ``None`` and the
caller takes ``dcmread``.

:func:`native_pixel_data_offset` finds where the native pixel data of a part starts, so the
multipart reader can receive the pixel bytes straight into their own ``bytes`` object.
"""

from __future__ import annotations

import io
import struct

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

#: (7FE0,0010) Pixel Data, little endian.
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
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


def read_header(header: bytes) -> FileDataset | None:
    """The dataset in ``header`` (bytes up to, not including, the pixel data element), or None.

    The result is what ``pydicom.dcmread(BytesIO(header), force=True, stop_before_pixels=True)``
    returns (same class, file meta, raw elements with the same offsets, original encoding),
    but only for Explicit VR Little Endian headers this reader understands fully; None otherwise.
    """
    start = 132 if header[128:132] == b"DICM" else 0
    end = len(header)
    if end - start < 8 or header[start : start + 2] != b"\x02\x00":
        return None  # no File Meta group first: dcmread decides
    meta, position = _elements(header, start, end, file_meta=True)
    if meta is None or position >= end:
        return None
    syntax = meta.get(_TRANSFER_SYNTAX_UID)  # type: ignore[call-overload]
    if syntax is None or syntax.VR != "UI" or (syntax.value or b"").rstrip(b"\x00 ") != _EXPLICIT_VR_LITTLE_ENDIAN:
        return None
    elements, position = _elements(header, position, end, file_meta=False)
    if elements is None or position != end:
        return None
    encoding = _encoding(elements.get(_SPECIFIC_CHARACTER_SET))  # type: ignore[call-overload]
    if encoding is None:
        return None
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True, default_encoding)
    dataset = FileDataset(io.BytesIO(header), elements, header[:128] if start else None, file_meta, False, True)
    dataset.set_original_encoding(False, True, encoding)
    return dataset


def _elements(buf: bytes, position: int, end: int, *, file_meta: bool) -> tuple[dict[BaseTag, RawDataElement] | None, int]:
    """Raw elements from ``position``: group 2 only (``file_meta``) or none of groups 0-2; None if unsupported."""
    out: dict[BaseTag, RawDataElement] = {}
    tags, vrs, unpack, unpack_length, new = _TAGS, _VRS, _ELEMENT, _LENGTH_32, _new_tuple
    while position < end:
        if position + 8 > end:
            return None, position
        group, element, vr_bytes, length = unpack(buf, position)
        if file_meta:
            if group != 2:
                break
        elif group <= 2 or group == 0xFFFE:
            return None, position  # command group, file meta out of place, or a delimiter
        known = vrs.get(vr_bytes)
        if known is None:
            return None, position  # implicit VR or an unknown VR: dcmread's heuristics apply
        vr, long_length = known
        if long_length:
            if position + 12 > end:
                return None, position
            (length,) = unpack_length(buf, position + 8)
            if length == _UNDEFINED_LENGTH:
                return None, position
            position += 12
        else:
            position += 8
        following = position + length
        if following > end:
            return None, position
        number = group << 16 | element
        tag = tags.get(number)
        if tag is None:
            tag = BaseTag(number)
            if len(tags) < _MAX_CACHED_TAGS:
                tags[number] = tag
        value = buf[position:following] if length else empty_value_for_VR(vr, raw=True)
        out[tag] = new(RawDataElement, (tag, vr, length, value, position, False, True, True, False))
        position = following
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
