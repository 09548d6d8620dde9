"""Streaming reader of ``multipart/related`` WADO-RS responses (RFC 2046, PS3.18 §8.7).

dicomweb-client's decoder scans every byte for the boundary and hands parts to
``pydicom.dcmread`` without ``force``, which fails on servers that omit the
128-byte preamble (Orthanc 1.10 does). This reader uses each part's
``Content-Length`` when the server sends one (Orthanc does), so a 100 MB
series is read with large socket reads and no byte scanning, and falls back to
searching for the delimiter otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import DICOMwebError

#: Largest header block of one part we accept (bytes).
MAX_PART_HEADER_BYTES = 16 * 1024


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


class _Buffer:
    """Bytes read ahead from a stream, consumed from the front."""

    def __init__(self, stream: BinaryIO, chunk_size: int) -> None:
        self.stream = stream
        self.chunk_size = chunk_size
        self.data = bytearray()
        self.pos = 0
        self.eof = False

    def _more(self, at_least: int) -> None:
        if self.pos > (1 << 22):  # drop consumed bytes now and then
            del self.data[: self.pos]
            self.pos = 0
        chunk = self.stream.read(max(self.chunk_size, at_least))
        if not chunk:
            self.eof = True
        self.data += chunk

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer at the end of the stream."""
        while len(self.data) - self.pos < n and not self.eof:
            self._more(n - (len(self.data) - self.pos))
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += len(out)
        return out

    def until(self, marker: bytes, limit: int | None = None) -> bytes | None:
        """Bytes up to ``marker`` (which is consumed), or None at end of stream."""
        start = self.pos
        while True:
            index = self.data.find(marker, start)
            if index >= 0:
                out = bytes(self.data[self.pos : index])
                self.pos = index + len(marker)
                return out
            if limit is not None and len(self.data) - self.pos > limit:
                raise DICOMwebError(f"multipart part header longer than {limit} bytes")
            if self.eof:
                return None
            start = max(self.pos, len(self.data) - len(marker))
            self._more(self.chunk_size)


def iter_parts(stream: BinaryIO, boundary: bytes, chunk_size: int = 8 << 20) -> Iterator[bytes]:
    """Yield the bodies of a multipart message read from ``stream``."""
    buf = _Buffer(stream, chunk_size)
    dash_boundary = b"--" + boundary
    if buf.until(dash_boundary) is None:
        raise DICOMwebError("multipart response holds no boundary line")
    while True:
        tail = buf.take(2)
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
            body = found
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


def dataset_from_part(body: bytes, index: int) -> Dataset:
    """Decode one ``application/dicom`` part (with or without the 128-byte preamble)."""
    try:
        ds = pydicom.dcmread(BytesIO(body), force=body[128:132] != b"DICM")
        ok = "SOPInstanceUID" in ds and "SOPClassUID" in ds
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError, struct.error) as exc:
        raise DICOMwebError(f"part {index} of the WADO-RS response is not a readable DICOM instance: {exc}") from exc
    if not ok:
        raise DICOMwebError(f"part {index} of the WADO-RS response is not a DICOM instance (no SOP Class/Instance UID)")
    return ds
