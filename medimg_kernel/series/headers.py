"""The header of a DICOM Part 10 file from its first bytes, as pydicom would read it.

:func:`parse_header` turns the leading bytes of a file (preamble, file meta information, then
data elements up to the pixel data) into the :class:`~pydicom.dataset.FileDataset` that
``pydicom.dcmread(path, stop_before_pixels=True)`` returns: the same raw data elements (tag, VR,
length, value bytes, file offset), the same file meta, preamble, filename and original encoding.
Values are decoded lazily by pydicom on first access, as with ``dcmread``.

It is a fast path for the common case only, and says so by returning ``None`` when it is not
sure to match pydicom: no ``DICM`` prefix, a transfer syntax other than explicit VR little
endian or an encapsulated one (implicit VR, big endian, deflated), a command set, an element
of undefined length (sequences written that way), an unknown VR, or a value cut off by the end
of the file. The caller then reads the file with ``dcmread``. It returns
:data:`NEED_MORE` when ``data`` ends before the pixel data and the file holds more bytes.

Why: pydicom's reader costs ~0.4 ms per CT header (a loop of small reads and checks per
element); building the same raw elements from one bounded read costs a fraction of that, which
matters when a SEG's 200 source headers are read (``read_headers``).
"""

from __future__ import annotations

import struct
from typing import Final

from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

__all__ = ["parse_header", "NEED_MORE", "PREAMBLE_BYTES"]

#: Returned by :func:`parse_header` when the bytes end before the header does.
NEED_MORE: Final = "need more bytes"
#: The preamble and the ``DICM`` prefix.
PREAMBLE_BYTES: Final = 132

_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<L")
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_VRS = {vr.encode(): vr.encode().decode() for vr in STANDARD_VR}  # plain str, as pydicom stores it
#: Syntaxes whose data set is not explicit VR little endian (left to pydicom).
_NOT_EXPLICIT_LE = frozenset({ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})
_UNDEFINED = 0xFFFFFFFF


class _NotFastPath(Exception):
    """The bytes need pydicom's general reader."""


def parse_header(data: bytes, path: str, at_eof: bool) -> FileDataset | str | None:
    """The header of the file ``path`` whose first bytes are ``data``.

    Parameters
    ----------
    data
        The file's bytes from offset 0 (at least the 132-byte preamble and prefix to be useful).
    path
        The file's path, recorded as ``FileDataset.filename`` (and its mtime as ``timestamp``).
    at_eof
        Whether ``data`` is the whole file.

    Returns
    -------
    pydicom.dataset.FileDataset or str or None
        The header, every element before (7FE0,0010) Pixel Data (or the float pixel data
        elements), as ``dcmread(path, stop_before_pixels=True)`` returns it; :data:`NEED_MORE`
        when ``data`` ends inside the header and ``at_eof`` is false; ``None`` when the file
        needs pydicom's general reader (see the module docstring).
    """
    if len(data) < PREAMBLE_BYTES:
        return None if at_eof else NEED_MORE
    if data[128:132] != b"DICM":
        return None
    try:
        meta, offset = _elements(data, PREAMBLE_BYTES, at_eof, meta=True)
        syntax = meta.get(BaseTag(0x00020010))
        if syntax is None or not syntax.value:
            return None
        if syntax.value.rstrip(b"\x00 ").decode("ascii") in _NOT_EXPLICIT_LE:
            return None
        elements, _ = _elements(data, offset, at_eof, meta=False)
    except _NeedMore:
        return NEED_MORE
    except (_NotFastPath, UnicodeDecodeError):
        return None
    if any(tag >> 16 == 0 for tag in elements):
        return None  # a command set: pydicom moves it aside
    return _file_dataset(path, data[:128], meta, elements)


class _NeedMore(Exception):
    """``data`` ends inside the header."""


def _elements(data: bytes, offset: int, at_eof: bool, *, meta: bool) -> tuple[dict[BaseTag, RawDataElement], int]:
    """Raw explicit VR little endian elements from ``offset``: the file meta group (``meta``) or the
    data set up to the pixel data; and the offset where they stop."""
    elements: dict[BaseTag, RawDataElement] = {}
    end = len(data)
    unpack_short, unpack_long = _SHORT.unpack_from, _LONG.unpack_from
    while True:
        if offset + 8 > end:
            if not at_eof:
                raise _NeedMore
            if offset == end and not meta:
                return elements, offset  # a file without pixel data
            raise _NotFastPath  # a file that ends in its meta group or inside an element header
        group, element, vr_bytes, length = unpack_short(data, offset)
        if meta and group != 2:
            return elements, offset
        tag = group << 16 | element
        if not meta and tag in _PIXEL_TAGS:
            return elements, offset
        vr = _VRS.get(vr_bytes)
        if vr is None:
            raise _NotFastPath  # an unknown VR, or implicit VR data
        header = 8
        if vr_bytes in _LONG_VRS:
            if offset + 12 > end:
                if at_eof:
                    raise _NotFastPath
                raise _NeedMore
            length = unpack_long(data, offset + 8)[0]
            header = 12
        if length == _UNDEFINED or tag == 0xFFFEE00D:
            raise _NotFastPath
        start = offset + header
        offset = start + length
        if offset > end:
            if at_eof:
                raise _NotFastPath  # truncated: pydicom decides what to say
            raise _NeedMore
        value = data[start:offset] if length else empty_value_for_VR(vr, raw=True)
        key = BaseTag(tag)
        elements[key] = RawDataElement(key, vr, length, value, start, False, True)  # type: ignore[arg-type]


def _file_dataset(path: str, preamble: bytes, meta: dict[BaseTag, RawDataElement],
                  elements: dict[BaseTag, RawDataElement]) -> FileDataset:
    """The FileDataset pydicom's ``read_partial`` builds from these elements (built directly from
    the element dicts: the same state as pydicom's intermediate Datasets, in fewer steps)."""
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True, default_encoding)
    # pydicom's reader decodes these while reading; so does this, to return the same objects
    for tag in (next(iter(meta)), 0x00020000, 0x00020010):
        if tag in file_meta:
            file_meta[tag]
    ds = FileDataset(path, elements, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, ds._character_set)  # as read_partial (decodes the charset)
    return ds
