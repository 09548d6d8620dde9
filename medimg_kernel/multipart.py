"""Streaming reader of ``multipart/related`` WADO-RS responses (RFC 2046, PS3.18 §8.7).

dicomweb-client's decoder scans every byte for the boundary and hands parts to
``pydicom.dcmread`` without ``force``, which fails on servers that omit the
128-byte preamble (Orthanc 1.10 does). This reader uses each part's
``Content-Length`` when the server sends one (Orthanc does), so a 100 MB
series is read with large socket reads and no byte scanning, and falls back to
searching for the delimiter otherwise.
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

from .errors import DICOMwebError

#: (7FE0,0010) PixelData, little endian.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
#: Headers longer than this (bytes) take the ordinary full read.
MAX_FAST_HEADER_BYTES = 64 * 1024
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
    """One part's body: ``data[start:end]`` (a window on a read-ahead chunk, not a copy)."""

    data: bytes
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def tobytes(self) -> bytes:
        return self.data[self.start : self.end]


class _Buffer:
    """Bytes read ahead from a stream, consumed from the front.

    Large parts are copied once from the read-ahead chunk (or read straight from the
    stream when they extend past it); consumed chunks are dropped, never shifted.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int) -> None:
        self.stream = stream
        self.chunk_size = chunk_size
        self.data = b""
        self.pos = 0
        self.eof = False

    def _available(self) -> int:
        return len(self.data) - self.pos

    def _more(self) -> None:
        chunk = self.stream.read(self.chunk_size)
        if not chunk:
            self.eof = True
        self.data = self.data[self.pos :] + chunk if self.pos < len(self.data) else chunk
        self.pos = 0

    def take(self, n: int) -> Part:
        """Exactly ``n`` bytes (fewer at the end of the stream), without copying when buffered."""
        if self._available() >= n:
            part = Part(self.data, self.pos, self.pos + n)
            self.pos += n
            return part
        pieces = [self.data[self.pos :]]
        missing = n - len(pieces[0])
        self.data, self.pos = b"", 0
        while missing > 0:
            chunk = self.stream.read(missing)
            if not chunk:
                self.eof = True
                break
            pieces.append(chunk)
            missing -= len(chunk)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return Part(data, 0, len(data))

    def until(self, marker: bytes, limit: int | None = None) -> bytes | None:
        """Bytes up to ``marker`` (which is consumed), or None at end of stream."""
        start = self.pos
        while True:
            index = self.data.find(marker, start)
            if index >= 0:
                out = self.data[self.pos : index]
                self.pos = index + len(marker)
                return out
            if limit is not None and self._available() > limit:
                raise DICOMwebError(f"multipart part header longer than {limit} bytes")
            if self.eof:
                return None
            searched = self._available()
            self._more()
            start = max(0, searched - len(marker))


def iter_parts(stream: BinaryIO, boundary: bytes, chunk_size: int = 8 << 20) -> Iterator[Part]:
    """Yield the bodies of a multipart message read from ``stream``."""
    buf = _Buffer(stream, chunk_size)
    dash_boundary = b"--" + boundary
    if buf.until(dash_boundary) is None:
        raise DICOMwebError("multipart response holds no boundary line")
    while True:
        tail = buf.take(2).tobytes()
        if tail == b"--" or not tail:
            return
        if tail != b"\r\n":  # transport padding after the boundary
            if buf.until(b"\r\n") is None:
                return
        headers = buf.until(b"\r\n\r\n", limit=MAX_PART_HEADER_BYTES)
        if headers is None:
            raise DICOMwebError("multipart response ended inside a part's headers")
        length = _content_length(headers if tail == b"\r\n" else b"")
        if length is not None:
            body = buf.take(length)
            if len(body) != length:
                raise DICOMwebError(f"multipart response ended {length - len(body)} bytes short of a part")
            if buf.until(b"\r\n" + dash_boundary) is None:
                raise DICOMwebError("multipart response ended without its closing boundary")
        else:
            found = buf.until(b"\r\n" + dash_boundary)
            if found is None:
                raise DICOMwebError("multipart response ended without its closing boundary")
            body = Part(found, 0, len(found))
        yield body


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

    Native (uncompressed) pixel data is copied once, straight from the received chunk;
    the header is parsed from a small copy of its own. Anything unusual (encapsulated pixel data, elements after the pixel
    data, a tag pattern inside the header) takes the ordinary full read.
    """
    if isinstance(part, bytes):
        part = Part(part, 0, len(part))
    try:
        ds = _read_native(part)
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
    """Header parsed from a small copy, PixelData as a view; None when the fast path does not apply."""
    pixel_tag = part.data.find(_PIXEL_DATA_TAG, part.start, min(part.end, part.start + MAX_FAST_HEADER_BYTES))
    if pixel_tag < 0 or pixel_tag + 12 > part.end:
        return None
    header_end = pixel_tag + 12
    vr = part.data[pixel_tag + 4 : pixel_tag + 6]
    (length,) = struct.unpack("<I", part.data[pixel_tag + 8 : header_end])
    if vr not in (b"OW", b"OB") or header_end + length != part.end:
        return None  # implicit VR, encapsulated (undefined length) or trailing elements
    header = part.data[part.start : header_end]
    fp = BytesIO(header)
    ds = pydicom.dcmread(fp, force=header[128:132] != b"DICM", stop_before_pixels=True)
    if fp.tell() != pixel_tag - part.start or ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
        return None
    # One copy, into a standalone bytes object: a memoryview would save it but makes the
    # dataset impossible to pickle or deepcopy (Celery, multiprocessing, highdicom).
    ds.PixelData = part.data[header_end : part.end]
    ds["PixelData"].VR = vr.decode()
    return ds
