"""Peekable byte streams: what the multipart reader reads from.

A :class:`ByteStream` can show the next bytes without consuming them (:meth:`ByteStream.peek`;
:meth:`ByteStream.peek_some` shows only what is there already) and hand over exactly ``n``
bytes (:meth:`ByteStream.read`). The multipart reader peeks at a
part's headers, then reads the pixel data in one ``read``: on a socket
(:mod:`medimg_kernel.http_stream`) that read lands in its own ``bytes`` object straight from
the kernel, with no copy in Python. :class:`BufferedStream` gives any file-like object
(a ``requests`` response, a ``BytesIO``) the same interface, with buffering and copies.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol


class ByteStream(Protocol):
    """A stream of bytes that can be looked at before it is consumed."""

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes, not consumed (fewer only at the end of the stream)."""
        ...

    def peek_some(self, n: int) -> bytes:
        """Up to ``n`` of the next bytes, not consumed, without waiting for more than the first."""
        ...

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes, consumed (fewer only at the end of the stream)."""
        ...


#: First window (bytes) :func:`read_until` peeks at; it doubles until the marker shows.
FIRST_WINDOW_BYTES = 4096


def read_until(stream: ByteStream, marker: bytes, limit: int | None = None) -> bytes | None:
    """Bytes up to ``marker`` (the marker is consumed too), or None if the stream ends first.

    ``limit`` (bytes) bounds what may come before the marker; more raises :class:`ValueError`.
    """
    size = FIRST_WINDOW_BYTES
    searched = 0
    while True:
        window = stream.peek(size)
        index = window.find(marker, max(0, searched - len(marker) + 1))
        if index >= 0:
            if limit is not None and index > limit:
                raise ValueError(f"more than {limit} bytes before {marker!r}")
            stream.read(index + len(marker))
            return window[:index]
        if len(window) < size:
            return None
        if limit is not None and len(window) > limit + len(marker):
            raise ValueError(f"more than {limit} bytes before {marker!r}")
        searched = len(window)
        size *= 2


class BufferedStream:
    """:class:`ByteStream` over a file-like object's ``read(n)`` (which may return fewer bytes).

    Bytes are read ``chunk_size`` at a time; ``read`` copies out of that buffer (one copy of
    every byte), and reads a long remainder straight from the stream.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int = 1 << 20) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._buffer = b""
        self._position = 0
        self._eof = False

    def _available(self) -> int:
        return len(self._buffer) - self._position

    def peek(self, n: int) -> bytes:
        while self._available() < n and not self._eof:
            chunk = self._stream.read(max(self._chunk_size, n - self._available()))
            if not chunk:
                self._eof = True
                break
            rest = self._buffer[self._position :]
            self._buffer, self._position = (rest + chunk if rest else chunk), 0
        return self._buffer[self._position : self._position + n]

    def peek_some(self, n: int) -> bytes:
        """As :meth:`peek` (a buffered stream reads ahead anyway)."""
        return self.peek(n)

    def read(self, n: int) -> bytes:
        if self._available() >= n:
            out = self._buffer[self._position : self._position + n]
            self._position += n
            return out
        pieces = [self._buffer[self._position :]] if self._available() else []
        missing = n - self._available()
        self._buffer, self._position = b"", 0
        while missing > 0 and not self._eof:
            chunk = self._stream.read(missing)
            if not chunk:
                self._eof = True
                break
            pieces.append(chunk)
            missing -= len(chunk)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
