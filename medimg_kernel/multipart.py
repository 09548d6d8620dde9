"""Streaming reader of ``multipart/related`` WADO-RS responses (RFC 2046, PS3.18 §8.7).

dicomweb-client's decoder scans every byte for the boundary and hands parts to
``pydicom.dcmread`` without ``force``, which fails on servers that omit the
128-byte preamble (Orthanc 1.10 does). This reader uses each part's
``Content-Length`` when the server sends one (Orthanc does), so a 100 MB
series is read with large reads and no byte scanning, and falls back to
searching for the delimiter otherwise. It peeks at the start of a sized part
for native pixel data running to its end, and then reads the header and the
pixel data separately: on a socket (:mod:`medimg_kernel.http_stream`) the pixel
data arrives in its own ``bytes`` object with no copy in Python.
"""

from __future__ import annotations

import io
import queue
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

from .byte_stream import BufferedStream, ByteStream, read_until
from .dicom_header import PIXEL_DATA_ELEMENT_HEADER_BYTES, native_pixel_data_offset, read_header
from .errors import DICOMwebError

#: Bytes looked at ahead of each part: delimiter, header fields and the start of the body, where
#: native pixel data must begin for the header and pixel data to be read apart (else the part
#: takes the ordinary full read). On a socket a peek this long consumes nothing
#: (``medimg_kernel.http_stream.SOCKET_PEEK_MAX_BYTES``).
PEEK_BYTES = 16 * 1024
#: Largest header block of one part we accept (bytes).
MAX_PART_HEADER_BYTES = 16 * 1024


class ReadAhead(io.RawIOBase):
    """A stream read by a background thread, ``depth`` chunks ahead of its consumer.

    Socket reads release the GIL, so receiving the next chunks overlaps with decoding
    the current ones. ``close()`` stops the thread.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int, depth: int = 4) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._pending = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(stream, chunk_size), daemon=True)
        self._thread.start()

    def _pump(self, stream: BinaryIO, chunk_size: int) -> None:
        try:
            while not self._stop.is_set():
                chunk = stream.read(chunk_size)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                self._queue.put(b"")  # stay at end of stream
                return b""
            self._pending = item
        if size < 0 or size >= len(self._pending):
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def close(self) -> None:
        self._stop.set()
        super().close()


def boundary_from_content_type(content_type: str) -> bytes:
    """The ``boundary`` parameter of a ``multipart/related`` Content-Type header."""
    media_type, *params = [p.strip() for p in content_type.split(";")]
    if media_type.lower() != "multipart/related":
        raise DICOMwebError(f"expected a multipart/related response, got {content_type!r}")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "boundary" and value:
            return value.strip().strip('"').encode("ascii")
    raise DICOMwebError(f"multipart/related response without a boundary: {content_type!r}")


@dataclass(frozen=True)
class Part:
    """One part's body: ``head`` then ``pixels``.

    When the reader found native pixel data running to the end of the part, ``head`` ends with
    that element's 12-byte header and ``pixels`` is its value, received into its own ``bytes``
    (it becomes ``PixelData`` as it is); otherwise ``head`` is the whole body and ``pixels`` None.
    """

    head: bytes
    pixels: bytes | None = None

    def __len__(self) -> int:
        return len(self.head) + (len(self.pixels) if self.pixels is not None else 0)

    def tobytes(self) -> bytes:
        return self.head if self.pixels is None else self.head + self.pixels


def iter_parts(stream: ByteStream | BinaryIO, boundary: bytes, chunk_size: int = 8 << 20) -> Iterator[Part]:
    """Yield the bodies of a multipart message read from ``stream``.

    ``stream`` is a :class:`~medimg_kernel.byte_stream.ByteStream` (a socket body) or any
    file-like object (read through a :class:`~medimg_kernel.byte_stream.BufferedStream` of
    ``chunk_size`` bytes). Each part usually costs one peek (delimiter, header fields and the
    start of the body together) and one or two reads. A message that ends before its closing delimiter
    raises :class:`DICOMwebError`: parts are never silently missing.
    """
    body: ByteStream = stream if hasattr(stream, "peek") and not isinstance(stream, io.IOBase) \
        else BufferedStream(stream, chunk_size)  # type: ignore[arg-type]
    dash_boundary = b"--" + boundary
    delimiter = b"\r\n" + dash_boundary
    if _until(body, dash_boundary) is None:
        raise DICOMwebError("multipart response holds no boundary line")
    after_part = False  # positioned after a sized part: its delimiter comes next
    while True:
        plan = _plan(body, delimiter if after_part else b"")
        if plan == "end":
            return
        if plan is None:  # not decidable from what the stream shows: step by step
            if after_part and _until(body, delimiter) is None:
                raise DICOMwebError("multipart response ended without its closing boundary")
            if body.peek(2) == b"--":
                return
            headers, start = _part_headers_slowly(body)
            length = _content_length(headers)
            offset = None if length is None else native_pixel_data_offset(body.peek(min(length, PEEK_BYTES)), length)
        else:
            headers, start, length, offset = plan
        if length is None:
            body.read(start)
            data = _until(body, delimiter)
            if data is None:
                raise DICOMwebError("multipart response ended without its closing boundary")
            yield Part(data)
            after_part = False  # the delimiter is consumed
            continue
        yield _sized_part(body, start, length, offset)
        after_part = True


_Plan = tuple[bytes, int, "int | None", "int | None"]


def _plan(body: ByteStream, expected: bytes) -> _Plan | str | None:
    """The next part's ``(header fields, start of its body, Content-Length, pixel data offset)``.

    Read from a peek at what is here already (``peek_some``); more is awaited only through
    ``peek``, which consumes where it must wait (a socket's receive buffer must drain for more
    to arrive). ``"end"`` at the closing delimiter; None when the window cannot tell (headers
    too long, bytes between a part and its delimiter, the end of the stream): the caller then
    goes step by step. ``expected``: the delimiter that must come first (after a sized part).
    """
    window = body.peek_some(PEEK_BYTES)
    while True:
        plan = _plan_from(window, expected)
        if plan is not False:
            return plan  # type: ignore[return-value]
        if len(window) >= PEEK_BYTES:
            return None
        more = body.peek(min(PEEK_BYTES, 2 * len(window) + 1024))
        if len(more) <= len(window):
            return None  # the stream ends within the window
        window = more


def _plan_from(window: bytes, expected: bytes) -> _Plan | str | None | bool:
    """:func:`_plan` from ``window``; False when the window is too short to tell."""
    if len(window) < len(expected) + 2:
        return False
    if expected and not window.startswith(expected):
        return None
    skip = len(expected)
    if window[skip : skip + 2] == b"--":
        return "end"
    found = _part_headers(window, skip)
    if found is None:
        return False if len(window) < PEEK_BYTES else None
    headers, start = found
    length = _content_length(headers)
    if length is None:
        return headers, start, None, None
    offset = native_pixel_data_offset(window[start : start + length], length)
    if offset is None and len(window) < min(start + length, PEEK_BYTES):
        return False  # the pixel data element may begin further on
    return headers, start, length, offset


def _part_headers(window: bytes, skip: int) -> tuple[bytes, int] | None:
    """``(header fields, offset of the body)`` of the part whose boundary line ends at ``skip``, if in ``window``."""
    line_end = window.find(b"\r\n", skip)  # after transport padding, if any
    if line_end < 0:
        return None
    fields_start = line_end + 2
    if window[fields_start : fields_start + 2] == b"\r\n":
        return b"", fields_start + 2
    fields_end = window.find(b"\r\n\r\n", fields_start)
    if fields_end < 0:
        return None
    return window[fields_start:fields_end], fields_end + 4


def _part_headers_slowly(body: ByteStream) -> tuple[bytes, int]:
    """Header fields of the part whose boundary was just consumed, consumed too; offset 0."""
    if _until(body, b"\r\n", limit=MAX_PART_HEADER_BYTES) is None:
        raise DICOMwebError("multipart response ended without its closing boundary")
    if body.peek(2) == b"\r\n":  # a part without header fields
        body.read(2)
        return b"", 0
    fields = _until(body, b"\r\n\r\n", limit=MAX_PART_HEADER_BYTES)
    if fields is None:
        raise DICOMwebError("multipart response ended inside a part's headers")
    return fields, 0


def _until(body: ByteStream, marker: bytes, limit: int | None = None) -> bytes | None:
    try:
        return read_until(body, marker, limit)
    except ValueError as exc:
        raise DICOMwebError(f"multipart part header longer than {limit} bytes") from exc


def _sized_part(body: ByteStream, start: int, length: int, pixel_offset: int | None) -> Part:
    """The part of ``length`` bytes after ``start`` bytes of delimiter and headers (consumed too).

    With ``pixel_offset`` (native pixel data at the part's end, see :class:`Part`) the pixel
    data is read on its own.
    """
    if pixel_offset is None:
        if start:
            body.read(start)
        pieces = [body.read(length)]
    else:
        split = start + pixel_offset + PIXEL_DATA_ELEMENT_HEADER_BYTES
        first = body.read(split)
        pieces = [first[start:] if start else first]
        if len(first) == split:
            pieces.append(body.read(length - split + start))
    got = sum(len(p) for p in pieces)
    if got != length:
        raise DICOMwebError(f"multipart response ended {length - got} bytes short of a part")
    return Part(*pieces)  # type: ignore[arg-type]


def _content_length(headers: bytes) -> int | None:
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def dataset_from_part(part: Part | bytes, index: int) -> Dataset:
    """Decode one ``application/dicom`` part (with or without the 128-byte preamble).

    Native (uncompressed) pixel data already received on its own (:class:`Part`) becomes
    ``PixelData`` as it is, and the header is read by :func:`medimg_kernel.dicom_header.read_header`
    (or ``dcmread`` where that declines). Anything unusual (encapsulated pixel data, elements
    after the pixel data, a tag pattern inside the header) takes the ordinary full read.
    """
    if isinstance(part, bytes):
        part = Part(part)
    try:
        ds = _read_native(part) if part.pixels is not None else None
        if ds is None:
            body = part.tobytes()
            ds = pydicom.dcmread(BytesIO(body), force=body[128:132] != b"DICM")
        ok = "SOPInstanceUID" in ds and "SOPClassUID" in ds
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError, struct.error) as exc:
        raise DICOMwebError(f"part {index} of the WADO-RS response is not a readable DICOM instance: {exc}") from exc
    if not ok:
        raise DICOMwebError(f"part {index} of the WADO-RS response is not a DICOM instance (no SOP Class/Instance UID)")
    return ds


def _read_native(part: Part) -> Dataset | None:
    """The header read on its own, ``part.pixels`` as PixelData; None when that does not apply."""
    header = part.head[:-PIXEL_DATA_ELEMENT_HEADER_BYTES]
    vr = part.head[-8:-6].decode("ascii")
    ds = read_header(header, exact_end=True)
    if ds is None:
        fp = BytesIO(header)
        ds = pydicom.dcmread(fp, force=header[128:132] != b"DICM", stop_before_pixels=True)
        if fp.tell() != len(header) or ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
            return None
    # The received bytes object itself: no copy. (A memoryview would make the dataset
    # impossible to pickle or deepcopy: Celery, multiprocessing, highdicom.)
    ds.PixelData = part.pixels
    ds["PixelData"].VR = vr
    return ds
