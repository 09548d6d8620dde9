"""The per-frame functional groups of a new SEG, encoded once: a speed-up that changes no output.

Why: a SEG has one PerFrameFunctionalGroupsSequence item per frame (~20 elements each: the
derivation image, frame content, plane position and segment identification), ~90 % of its
elements. pydicom's writer spends ~20 µs per element (a buffer per element, the ambiguous-VR
pass repeated for every nested item), so ``save_as`` of a 200-frame SEG took ~90 ms.

:func:`preencode_frame_groups` encodes that sequence once, in explicit VR little endian exactly
as pydicom writes it, and stores it as a raw element (pydicom decodes a raw sequence again when
it is accessed, so the dataset reads the same). It also resolves the only ambiguous VR of a SEG
(Pixel Data: ``OB``, as pydicom's ambiguous-VR pass picks for BitsAllocated 1 or 8) and records
the data set's encoding as explicit VR little endian, so that ``save_as`` in that syntax writes
the raw bytes as they are. Saving in another syntax re-encodes everything, as before.

Only what it can encode exactly is encoded: it leaves the dataset untouched (returns ``False``)
when the sequence holds a raw element, a nested SpecificCharacterSet, a VR outside
:data:`_ENCODERS`, or a 16-bit-length value over 64 KiB.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, default_encoding, encode_string
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

__all__ = ["preencode_frame_groups"]

_PER_FRAME = 0x52009230
_PIXEL_DATA = 0x7FE00010
_ITEM = struct.Struct("<HHL")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xL")
_LONG_VRS = frozenset(str(vr.value) for vr in EXPLICIT_VR_LENGTH_32)


class _CannotEncode(Exception):
    """An element this encoder does not reproduce exactly: keep pydicom's writer."""


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _ascii(value: Any, padding: bytes, _: list[str]) -> bytes:
    """pydicom's ``write_string`` (AE, AS, CS, UR; UI padded with NUL)."""
    data = "\\".join(str(v) for v in _values(value)).encode(default_encoding)
    return data + padding if len(data) % 2 else data


def _text(value: Any, _: bytes, encodings: list[str]) -> bytes:
    """pydicom's ``write_text`` (LO, LT, SH, ST, UC, UT) in the data set's character set."""
    data = b"\\".join(encode_string(str(v), encodings) for v in _values(value))
    return data + b" " if len(data) % 2 else data


def _number_string(value: Any, _: bytes, __: list[str]) -> bytes:
    """pydicom's ``write_number_string`` (DS, IS): the original string where there is one."""
    text = "\\".join(getattr(v, "original_string", None) or str(v) for v in _values(value))
    data = text.encode(default_encoding)
    return data + b" " if len(data) % 2 else data


def _numbers(fmt: str) -> Callable[[Any, bytes, list[str]], bytes]:
    def encode(value: Any, _: bytes, __: list[str]) -> bytes:
        values = _values(value)
        return struct.pack(f"<{len(values)}{fmt}", *values)
    return encode


_ENCODERS: dict[str, tuple[Callable[[Any, bytes, list[str]], bytes], bytes]] = {
    "AE": (_ascii, b" "), "AS": (_ascii, b" "), "CS": (_ascii, b" "), "UR": (_ascii, b" "),
    "UI": (_ascii, b"\x00"),
    "LO": (_text, b" "), "LT": (_text, b" "), "SH": (_text, b" "), "ST": (_text, b" "),
    "UC": (_text, b" "), "UT": (_text, b" "),
    "DS": (_number_string, b" "), "IS": (_number_string, b" "),
    "US": (_numbers("H"), b""), "UL": (_numbers("L"), b""), "SS": (_numbers("h"), b""),
    "SL": (_numbers("l"), b""), "FL": (_numbers("f"), b""), "FD": (_numbers("d"), b""),
}


def _element(elem: DataElement | RawDataElement, encodings: list[str]) -> bytes:
    if elem.is_raw:
        raise _CannotEncode
    vr, tag = elem.VR, elem.tag
    if vr == "SQ":
        if elem.is_undefined_length:
            raise _CannotEncode
        value = b"".join(_item(item, encodings) for item in elem.value)
    elif vr in _ENCODERS:
        encode, padding = _ENCODERS[vr]
        value = b"" if elem.is_empty else encode(elem.value, padding, encodings)
    else:
        raise _CannotEncode
    if vr in _LONG_VRS:
        return _LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
    if len(value) > 0xFFFF:
        raise _CannotEncode  # pydicom would write it as UN
    return _SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _item(item: Dataset, encodings: list[str]) -> bytes:
    if getattr(item, "is_undefined_length_sequence_item", False) or 0x00080005 in item:
        raise _CannotEncode
    body = b"".join(_element(item.get_item(tag), encodings)  # type: ignore[arg-type]
                    for tag in sorted(item.keys()) if not (tag.element == 0 and tag.group > 6))
    return _ITEM.pack(0xFFFE, 0xE000, len(body)) + body


def _ambiguous(elem: DataElement | RawDataElement) -> bool:
    """Whether ``elem`` (or an element nested in it) has an ambiguous VR such as ``"US or SS"``."""
    if elem.is_raw or elem.VR is None or len(elem.VR) != 2:
        return True
    return elem.VR == "SQ" and any(_ambiguous(e) for item in elem.value for e in item.elements())


def preencode_frame_groups(seg: Dataset) -> bool:
    """Store ``seg``'s PerFrameFunctionalGroupsSequence as its explicit VR little endian bytes.

    Parameters
    ----------
    seg
        A SEG just built by highdicom (explicit VR little endian transfer syntax).

    Returns
    -------
    bool
        Whether the sequence was stored encoded (see the module docstring); ``False`` leaves
        ``seg`` as it was.
    """
    if str(seg.file_meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2.1" or _PER_FRAME not in seg:
        return False
    elem = seg.get_item(_PER_FRAME)
    pixel_data = seg.get_item(_PIXEL_DATA)
    if pixel_data is None or pixel_data.is_raw or int(seg.BitsAllocated) > 8:
        return False
    if any(_ambiguous(e) for e in seg.elements() if e.tag not in (_PER_FRAME, _PIXEL_DATA)):
        return False  # left to pydicom's ambiguous-VR pass, which this one skips
    encodings = convert_encodings(seg.get("SpecificCharacterSet", default_encoding))
    try:
        encoded = _element(elem, encodings)
    except _CannotEncode:
        return False
    value = encoded[12:]  # after tag, VR, reserved bytes and length
    seg[_PER_FRAME] = RawDataElement(elem.tag, "SQ", len(value), value, 0, False, True)  # type: ignore[assignment]
    if pixel_data.VR not in ("OB", "OW"):
        pixel_data.VR = "OB"  # what pydicom's ambiguous-VR pass picks for BitsAllocated <= 8
    seg.set_original_encoding(False, True, seg._character_set)
    return True
