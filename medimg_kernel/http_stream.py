"""An HTTP/1.1 GET on a plain socket, its body read as a :class:`~medimg_kernel.byte_stream.ByteStream`.

Why not requests: requests (urllib3, ``http.client``) hands the body over in chunks it
allocates itself, so every byte of a WADO-RS answer is copied at least once more in Python
(``requests.get(url).content`` alone takes 3-4x the plain socket read of a 105 MB series on
loopback: ``benchmarks/bench_retrieve.py``). Here the multipart reader peeks at each part's
headers among the bytes already received (``MSG_PEEK``) and receives the part's pixel data
with one ``recv(n, MSG_WAITALL)`` into a ``bytes`` object of its own, which becomes
``PixelData``: the kernel's copy is the only one.

Only what this module can do exactly as the caller's ``requests.Session`` would is done here:
plain ``http://`` (TLS sockets cannot peek), no proxy, the session's default adapter without
retries, no response hooks (digest auth), not on Windows. The request is prepared by the session itself
(``Session.prepare_request``: its headers, auth, cookies), cookies set by the answer go into
the session's jar, and a redirect or a compressed answer is left to requests. :func:`get`
returns None whenever the session's configuration needs requests, and the caller uses it.

Failures raise requests' own exceptions (``ConnectionError``, ``ConnectTimeout``,
``ReadTimeout``, ``ChunkedEncodingError``), so callers translate them as they do for requests.
Timeouts follow requests' meaning: the connect timeout bounds the connection, the read timeout
each wait for data (``SO_RCVTIMEO``: one peek or one read of a part).
"""

from __future__ import annotations

import http.client
import io
import socket
import struct
import sys
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import MockRequest, MockResponse
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, select_proxy


#: Largest peek (bytes) done with ``MSG_PEEK``; longer ones buffer. Small enough to fit any
#: socket receive buffer (else a peek could wait for data the sender cannot send).
SOCKET_PEEK_MAX_BYTES = 16 * 1024
#: Largest response head (status line and headers) accepted (bytes).
MAX_HEAD_BYTES = 64 * 1024
#: Most of an error answer's body kept for its message (bytes).
MAX_ERROR_BODY_BYTES = 1 << 20
#: Statuses requests would follow as redirects.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

Timeout = float | tuple[float | None, float | None] | None


class _PendingFirst:
    """A body whose peeks may have consumed bytes into ``_pending``: ``read`` serves those first,
    then fresh bytes from :meth:`_fresh`."""

    _pending: bytes = b""

    def _fresh(self, n: int) -> bytes:
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        if not self._pending:
            return self._fresh(n)
        if len(self._pending) >= n:
            out, self._pending = self._pending[:n], self._pending[n:]
            return out
        head, self._pending = self._pending, b""
        return head + self._fresh(n - len(head))


class SocketBody(_PendingFirst):
    """The body of a response read from a socket: ``length`` bytes, or until the server closes.

    A ``peek`` of up to :data:`SOCKET_PEEK_MAX_BYTES` that the received bytes satisfy uses
    ``MSG_PEEK`` (nothing consumed), so the following ``read`` goes straight from the socket
    into the returned ``bytes``. Longer peeks, and peeks that would have to wait, consume into
    a buffer that reads serve first (then a part's pixel data is joined: one copy).
    """

    def __init__(self, sock: socket.socket, length: int | None, url: str) -> None:
        self._sock = sock
        self._left = length  # bytes of the body not yet consumed from the socket; None: until close
        self._sized = length is not None
        self._pending = b""
        self._eof = length == 0
        self._url = url

    def start_body(self, length: int | None) -> None:
        """The head has been read: from here on the stream is the body, ``length`` bytes or until close."""
        self._sized = length is not None
        if length is None:
            self._left = None
        else:
            self._pending = self._pending[:length]
            self._left = length - len(self._pending)
            self._eof = self._left == 0

    def _limit(self, n: int) -> int:
        return n if self._left is None else min(n, self._left)

    def _recv(self, n: int, flags: int = 0) -> bytes:
        try:
            return self._sock.recv(n, flags)
        except BlockingIOError as exc:  # SO_RCVTIMEO ran out with nothing received
            raise requests.exceptions.ReadTimeout(f"read timed out receiving from {self._url}") from exc
        except OSError as exc:
            raise requests.exceptions.ConnectionError(f"connection to {self._url} broken: {exc}") from exc

    def _fresh(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body from the socket (fewer only at its end)."""
        n = self._limit(n)
        if n <= 0 or self._eof:
            return b""
        data = self._recv(n, socket.MSG_WAITALL)
        if len(data) < n:  # the end, a signal, or the timeout with some data: look again
            pieces = [data]
            got = len(data)
            while got < n and data:
                data = self._recv(n - got, socket.MSG_WAITALL)
                pieces.append(data)
                got += len(data)
            data = b"".join(pieces)
        if self._left is not None:
            self._left -= len(data)
        if len(data) < n:
            self._eof = True
            if self._sized:
                raise requests.exceptions.ChunkedEncodingError(
                    f"connection to {self._url} broken: the body ended {n - len(data)} bytes short of its Content-Length")
        return data

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes, not consumed; if they are not all here yet, they are received into a buffer.

        A peek never waits for bytes beyond those already received (``MSG_PEEK`` without
        ``MSG_WAITALL``): bytes that are not consumed hold the socket's receive buffer, and the
        sender may be unable to send the rest until they are (a deadlock, seen with Orthanc).
        """
        if len(self._pending) >= n:
            return self._pending[:n]
        if not self._pending and n <= SOCKET_PEEK_MAX_BYTES and not self._eof:
            want = self._limit(n)
            if want <= 0:
                return b""
            data = self._recv(want, socket.MSG_PEEK)
            if len(data) == want:
                return data
        self._pending += self._fresh(n - len(self._pending))
        return self._pending[:n]

    def peek_some(self, n: int) -> bytes:
        """Up to ``n`` bytes already here, not consumed: waits only for the first (b"" at the end)."""
        if self._pending:
            return self._pending[:n]
        want = self._limit(min(n, SOCKET_PEEK_MAX_BYTES))
        if want <= 0 or self._eof:
            return b""
        return self._recv(want, socket.MSG_PEEK)



def read_through(raw: SocketBody, marker: bytes, limit: int) -> bytes | None:
    """Bytes up to ``marker`` (consumed with it), or None at the end; more than ``limit`` before it: ValueError.

    Unlike :func:`~medimg_kernel.byte_stream.read_until` it never waits for bytes beyond the
    marker, which may never come: the HTTP head and the chunked framing are followed by
    nothing when the server keeps the connection open.
    """
    window = raw.peek_some(limit + len(marker))
    while True:
        index = window.find(marker)
        if index >= 0:
            raw.read(index + len(marker))
            return window[:index]
        if len(window) >= limit + len(marker):
            raise ValueError(f"more than {limit} bytes before {marker!r}")
        more = raw.peek(len(window) + 1)  # one byte more than here: it must come, or the stream ends
        if len(more) <= len(window):
            return None
        window = more


class ChunkedBody(_PendingFirst):
    """A body in chunked transfer coding (RFC 9112 §7.1), decoded; reads within a chunk are direct."""

    def __init__(self, raw: SocketBody, url: str) -> None:
        self._raw = raw
        self._url = url
        self._chunk_left = 0
        self._started = False
        self._done = False
        self._pending = b""

    def _broken(self, what: str) -> requests.exceptions.ChunkedEncodingError:
        return requests.exceptions.ChunkedEncodingError(f"connection to {self._url} broken: {what}")

    def _next_chunk(self) -> None:
        """Step over the end of the finished chunk and read the next chunk's size."""
        if self._started and self._raw.read(2) != b"\r\n":
            raise self._broken("a chunk does not end with CRLF")
        self._started = True
        try:
            line = read_through(self._raw, b"\r\n", limit=1024)
        except ValueError as exc:
            raise self._broken("a chunk size line is too long") from exc
        if line is None:
            raise self._broken("the body ended inside its chunked framing")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise self._broken(f"bad chunk size {line[:40]!r}") from exc
        if size < 0:
            raise self._broken(f"bad chunk size {line[:40]!r}")
        if size == 0:
            while True:  # trailer fields, then an empty line
                try:
                    trailer = read_through(self._raw, b"\r\n", limit=MAX_HEAD_BYTES)
                except ValueError as exc:
                    raise self._broken("a trailer field is too long") from exc
                if trailer is None:
                    raise self._broken("the body ended inside its trailer")
                if not trailer:
                    break
            self._done = True
        self._chunk_left = size

    def _fresh(self, n: int) -> bytes:
        """Up to ``n`` decoded bytes (fewer only at the body's end)."""
        pieces = []
        while n > 0:
            if self._chunk_left == 0:
                if self._done:
                    break
                self._next_chunk()
                continue
            take = min(n, self._chunk_left)
            piece = self._raw.read(take)
            if len(piece) < take:
                raise self._broken("the body ended inside a chunk")
            self._chunk_left -= take
            n -= take
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def peek(self, n: int) -> bytes:
        if len(self._pending) >= n:
            return self._pending[:n]
        if not self._pending:
            while self._chunk_left == 0 and not self._done:
                self._next_chunk()
            if self._chunk_left >= n:
                return self._raw.peek(n)
        self._pending += self._fresh(n - len(self._pending))
        return self._pending[:n]

    def peek_some(self, n: int) -> bytes:
        if self._pending:
            return self._pending[:n]
        while self._chunk_left == 0 and not self._done:
            self._next_chunk()
        return self._raw.peek_some(min(n, self._chunk_left)) if self._chunk_left else b""



class HTTPStream:
    """A response whose head has been read; :attr:`body` streams its body. Close it (or use ``with``)."""

    def __init__(self, sock: socket.socket, url: str, status: int, reason: str, headers: CaseInsensitiveDict[str],
                 message: http.client.HTTPMessage, body: SocketBody | ChunkedBody) -> None:
        self._sock = sock
        self.message = message
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def __enter__(self) -> HTTPStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def to_response(self) -> requests.Response:
        """A ``requests.Response`` with this status, headers and (up to 1 MB of) body: for errors."""
        response = requests.Response()
        response.status_code = self.status
        response.reason = self.reason
        response.headers = self.headers
        response.url = self.url
        response.encoding = get_encoding_from_headers(self.headers)
        try:
            response._content = self.body.read(MAX_ERROR_BODY_BYTES)
        except requests.RequestException:
            response._content = b""
        return response


def _timeouts(timeout: Timeout) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout
    return timeout, timeout


def _can_stream(session: requests.Session, url: str) -> bool:
    """Whether :func:`get` can do what ``session.get(url)`` would (see the module's docstring)."""
    if urlsplit(url).scheme != "http" or sys.platform == "win32":  # Windows: SO_RCVTIMEO is not a timeval
        return False
    adapter = session.get_adapter(url)
    if type(adapter) is not HTTPAdapter or adapter.max_retries.total != 0:
        return False
    proxies = session.merge_environment_settings(url, {}, None, None, None)["proxies"]
    return not select_proxy(url, proxies)


def get(session: requests.Session, url: str, headers: Mapping[str, str], timeout: Timeout) -> HTTPStream | None:
    """GET ``url`` with ``session``'s headers, auth and cookies; None when requests must do it.

    The answer's head is read; the caller reads :attr:`HTTPStream.body` and closes the stream.
    ``timeout`` is requests' ``(connect, read)`` in seconds (or one number for both).
    """
    if not _can_stream(session, url):
        return None
    request = session.prepare_request(requests.Request("GET", url, headers=dict(headers)))
    if request.body is not None or any(request.hooks.get("response", [])):
        return None
    parts = urlsplit(request.url or url)
    host, port = parts.hostname or "", parts.port or 80
    authority = parts.netloc.rpartition("@")[2]
    lines = [f"GET {request.path_url} HTTP/1.1", f"Host: {authority}"]
    for name, value in request.headers.items():
        if name.lower() not in ("host", "connection", "accept-encoding", "content-length"):
            lines.append(f"{name}: {value}")
    lines += ["Accept-Encoding: identity", "Connection: close", "", ""]
    connect_timeout, read_timeout = _timeouts(timeout)
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError as exc:
        raise requests.exceptions.ConnectTimeout(f"connecting to {host}:{port} timed out ({exc})") from exc
    except OSError as exc:
        raise requests.exceptions.ConnectionError(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        sock.settimeout(None)  # blocking, so MSG_WAITALL waits; the read timeout is the kernel's
        if read_timeout is not None:
            seconds = max(read_timeout, 0.001)
            interval = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall("\r\n".join(lines).encode("latin-1"))
        except OSError as exc:
            raise requests.exceptions.ConnectionError(f"sending to {host}:{port} failed: {exc}") from exc
        stream = _read_response(sock, url)
        if stream.status in REDIRECT_STATUSES or stream.headers.get("Content-Encoding", "identity").lower() != "identity":
            sock.close()
            return None
        if "Set-Cookie" in stream.headers:
            _keep_cookies(session, request, stream)
        return stream
    except BaseException:
        sock.close()
        raise


def _read_response(sock: socket.socket, url: str) -> HTTPStream:
    raw = SocketBody(sock, None, url)
    while True:
        try:
            head = read_through(raw, b"\r\n\r\n", limit=MAX_HEAD_BYTES)
        except ValueError as exc:
            raise requests.exceptions.ConnectionError(f"{url}: response head longer than {MAX_HEAD_BYTES} bytes") from exc
        if head is None:
            raise requests.exceptions.ConnectionError(f"{url}: the server closed the connection without an answer")
        status_line, _, fields = head.partition(b"\r\n")
        version, _, rest = status_line.decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise requests.exceptions.ConnectionError(f"{url}: not an HTTP answer: {status_line[:80]!r}")
        status = int(code)
        if status >= 200:
            break  # 1xx answers (100 Continue) precede the real one
    try:
        message = http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n"))
    except http.client.HTTPException as exc:  # too many or too long header fields
        raise requests.exceptions.ConnectionError(f"{url}: bad response head: {exc!r}") from exc
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for name in dict.fromkeys(message.keys()):
        headers[name] = ", ".join(message.get_all(name) or [])
    body: SocketBody | ChunkedBody
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = ChunkedBody(raw, url)
    else:
        length = headers.get("Content-Length")
        try:
            size = int(length) if length is not None else None
        except ValueError as exc:
            raise requests.exceptions.ConnectionError(f"{url}: bad Content-Length {length!r}") from exc
        if size is not None and size < 0:
            raise requests.exceptions.ConnectionError(f"{url}: bad Content-Length {length!r}")
        raw.start_body(size)
        body = raw
    return HTTPStream(sock, url, status, reason.strip(), headers, message, body)


def _keep_cookies(session: requests.Session, request: requests.PreparedRequest, stream: HTTPStream) -> None:
    """Put the answer's cookies into the session's jar, as requests does."""
    session.cookies.extract_cookies(MockResponse(stream.message), MockRequest(request))  # type: ignore[arg-type]
