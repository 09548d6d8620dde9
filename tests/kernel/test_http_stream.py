"""WADO-RS retrieval on the raw socket (medimg_kernel.http_stream) against a canned HTTP server.

Every framing (Content-Length, until close, chunked), truncations, error statuses, timeouts,
redirects and the cases left to requests; the socket path must give what the requests path gives.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests
from requests.adapters import HTTPAdapter

from medimg_kernel import http_stream
from medimg_kernel.client import DICOMwebHTTPClient
from medimg_kernel.errors import AccessDeniedError, DICOMwebError, NotFoundError
from tests.series_factory import small_ct_series

BOUNDARY = "7d1f0c2e-test-boundary"
STUDY, SERIES = "1.2.3", "1.2.3.4"


def _files(seed: int = 11) -> tuple[list, list[bytes]]:
    series = small_ct_series(seed=seed)
    files = []
    for ds in series:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue()[132:])  # as Orthanc 1.10 sends them: no preamble
    return series, files


def _multipart(bodies: list[bytes], content_length: bool = True, content_type: str = "application/dicom") -> bytes:
    out = b""
    for body in bodies:
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n".encode()
        if content_length:
            out += b"Content-Length: %d\r\n" % len(body)
        out += b"MIME-Version: 1.0\r\n\r\n" + body + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _chunked(body: bytes, size: int) -> bytes:
    out = b""
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


def _answer(body: bytes, framing: str = "length", status: str = "200 OK", extra: str = "",
            content_type: str = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}') -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}"
    if framing == "length":
        head += f"Content-Length: {len(body)}\r\n"
    elif framing.startswith("chunked"):
        head += "Transfer-Encoding: chunked\r\n"
        body = _chunked(body, int(framing.split(":")[1]))
    return (head + "Connection: close\r\n\r\n").encode() + body


@dataclass
class CannedServer:
    """Answers the n-th connection with ``answers[n]`` (bytes, sent in ``step``-byte pieces), then closes.

    ``stall_after`` bytes: send that much, then keep the connection open without sending;
    ``keep_open``: send it all, then keep the connection open (keep-alive, whatever was asked).
    """

    answers: list[bytes]
    step: int = 1 << 20
    stall_after: int | None = None
    keep_open: bool = False
    requests_seen: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def _serve(self) -> None:
        for answer in self.answers:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                self.requests_seen.append(request)
                data = answer if self.stall_after is None else answer[: self.stall_after]
                try:
                    for start in range(0, len(data), self.step):
                        conn.sendall(data[start : start + self.step])
                except OSError:
                    continue
                if self.stall_after is not None or self.keep_open:
                    self._stop.wait(10)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., CannedServer]]:
    servers: list[CannedServer] = []

    def start(*answers: bytes, **options: object) -> CannedServer:
        server = CannedServer(list(answers), **options)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


class _PlainAdapter(HTTPAdapter):
    """An adapter of the session's own: requests must do the request (the fallback path)."""


def _client(url: str, *, via_requests: bool = False, timeout: tuple[float, float] = (5.0, 30.0)) -> DICOMwebHTTPClient:
    session = requests.Session()
    session.auth = ("user", "secret")
    if via_requests:
        session.mount("http://", _PlainAdapter())
    return DICOMwebHTTPClient(url, session=session, timeout=timeout)


def _assert_same(got, series) -> None:
    assert [str(d.SOPInstanceUID) for d in got] == [str(d.SOPInstanceUID) for d in series]
    for retrieved, original in zip(got, series):
        assert isinstance(retrieved.PixelData, bytes)
        assert np.array_equal(retrieved.pixel_array, original.pixel_array)
        assert retrieved.ImagePositionPatient == original.ImagePositionPatient


@pytest.mark.parametrize("framing", ["length", "close", "chunked:1000", "chunked:1048576", "chunked:7"])
@pytest.mark.parametrize("step", [1 << 20, 777])
def test_every_framing_gives_the_instances_and_the_same_as_requests(serve, framing, step):
    series, files = _files()
    answer = _answer(_multipart(files), framing)
    server = serve(answer, answer, step=step)
    got = _client(server.url).retrieve_series(STUDY, SERIES)
    _assert_same(got, series)
    through_requests = _client(server.url, via_requests=True).retrieve_series(STUDY, SERIES)
    assert got == through_requests
    assert [d.file_meta for d in got] == [d.file_meta for d in through_requests]
    request = server.requests_seen[0].decode()
    assert request.startswith(f"GET /dicom-web/studies/{STUDY}/series/{SERIES} HTTP/1.1\r\n")
    assert "Authorization: Basic dXNlcjpzZWNyZXQ=\r\n" in request  # the session's auth
    assert 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n' in request


@pytest.mark.parametrize("framing", ["length", "chunked:1000", "chunked:100000"])
@pytest.mark.parametrize("status", ["200 OK", "404 Not Found"])
def test_a_server_that_keeps_the_connection_open_is_not_waited_for(serve, framing, status):
    """Nothing is read past the framing's end: a peek there would wait for the read timeout."""
    series, files = _files()
    answer = _answer(_multipart(files), framing, status=status)
    server = serve(answer, keep_open=True)
    start = time.monotonic()
    client = _client(server.url, timeout=(5.0, 20.0))
    if status.startswith("404"):
        with pytest.raises(NotFoundError):
            client.retrieve_series(STUDY, SERIES)
    else:
        _assert_same(client.retrieve_series(STUDY, SERIES), series)
    assert time.monotonic() - start < 5


def test_parts_without_content_length_and_non_native_parts(serve):
    series, files = _files(seed=12)
    server = serve(_answer(_multipart(files, content_length=False)), _answer(_multipart(files), "chunked:5000"))
    _assert_same(_client(server.url).retrieve_series(STUDY, SERIES), series)
    _assert_same(_client(server.url).retrieve_series(STUDY, SERIES), series)


def test_the_session_headers_and_cookies_are_honoured(serve):
    series, files = _files()
    server = serve(_answer(_multipart(files), extra="Set-Cookie: route=abc; Path=/\r\n"))
    session = requests.Session()
    session.headers["Authorization"] = "token not-basic"
    session.cookies.set("earlier", "1")
    got = DICOMwebHTTPClient(server.url, session=session).retrieve_series(STUDY, SERIES)
    _assert_same(got, series)
    request = server.requests_seen[0].decode()
    assert "Authorization: token not-basic\r\n" in request and "Cookie: earlier=1\r\n" in request
    assert session.cookies.get("route") == "abc"


@pytest.mark.parametrize("framing", ["length", "close", "chunked:1000"])
@pytest.mark.parametrize("cut", ["inside pixel data", "inside a header", "after a part", "after a boundary line",
                                 "before the closing dashes"])
def test_a_truncated_body_raises(serve, framing, cut):
    _, files = _files()
    message = _multipart(files)
    second = message.index(f"--{BOUNDARY}".encode(), 10)
    where = {
        "inside pixel data": second - 300,
        "inside a header": second + 60,
        "after a part": second - 2,
        "after a boundary line": second + len(BOUNDARY) + 4,
        "before the closing dashes": len(message) - 4,
    }[cut]
    truncated = message[:where]
    if framing == "length":  # the server announces the whole body, then closes early
        answer = _answer(message, "length")
        answer = answer[: len(answer) - len(message) + where]
    elif framing == "close":
        answer = _answer(truncated, "close")
    else:  # chunked framing cut off (no last chunk)
        answer = _answer(message, framing)
        body_start = answer.index(b"\r\n\r\n") + 4
        answer = answer[: answer.index(message[where - 20 : where], body_start) + 20]
    server = serve(answer, answer)
    for client in (_client(server.url), _client(server.url, via_requests=True)):
        with pytest.raises(DICOMwebError, match="short of a part|closing boundary|broken|ended|IncompleteRead"):
            client.retrieve_series(STUDY, SERIES)


@pytest.mark.parametrize(("status", "error"), [("404 Not Found", NotFoundError), ("401 Unauthorized", AccessDeniedError),
                                               ("403 Forbidden", AccessDeniedError),
                                               ("500 Internal Server Error", DICOMwebError)])
@pytest.mark.parametrize("framing", ["length", "close", "chunked:4"])
def test_error_statuses_raise_the_same_errors_as_through_requests(serve, status, error, framing):
    answer = _answer(b"Unknown resource\nsecond line", framing, status=status, content_type="text/plain")
    server = serve(answer, answer)
    raised = []
    for client in (_client(server.url), _client(server.url, via_requests=True)):
        with pytest.raises(error) as info:
            client.retrieve_series(STUDY, SERIES)
        raised.append(info.value)
    ours, theirs = raised
    assert type(ours) is type(theirs) and str(ours) == str(theirs) and ours.status == theirs.status == int(status[:3])
    assert "Unknown resource" in str(ours) and f"HTTP {status[:3]}" in str(ours)


def test_a_non_dicom_part_raises(serve):
    _, files = _files()
    body = _multipart(files[:1]).rsplit(f"--{BOUNDARY}--".encode(), 1)[0]
    body += _multipart([b"this is not DICOM"], content_type="text/plain")
    server = serve(_answer(body), _answer(body))
    for client in (_client(server.url), _client(server.url, via_requests=True)):
        with pytest.raises(DICOMwebError, match="part 1 of the WADO-RS response is not"):
            client.retrieve_series(STUDY, SERIES)


def test_a_non_multipart_answer_raises(serve):
    server = serve(_answer(b"{}", content_type="application/json"))
    with pytest.raises(DICOMwebError, match="expected a multipart/related response"):
        _client(server.url).retrieve_series(STUDY, SERIES)


def test_a_stalled_server_times_out(serve):
    _, files = _files()
    answer = _answer(_multipart(files), "close")
    server = serve(answer, stall_after=len(answer) // 2)
    start = time.monotonic()
    with pytest.raises(DICOMwebError, match="cannot reach.*timed out"):
        _client(server.url, timeout=(2.0, 0.3)).retrieve_series(STUDY, SERIES)
    assert time.monotonic() - start < 5


def test_a_redirect_is_left_to_requests(serve):
    series, files = _files()
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    server = serve(redirect, redirect, _answer(_multipart(files)))
    _assert_same(_client(server.url).retrieve_series(STUDY, SERIES), series)
    assert b"GET /elsewhere " in server.requests_seen[2]


def test_what_the_socket_path_leaves_to_requests(monkeypatch):
    headers = {"Accept": "*/*"}
    plain = requests.Session()
    assert http_stream._can_stream(plain, "http://127.0.0.1:9/x")
    assert http_stream.get(plain, "https://127.0.0.1:9/x", headers, 1.0) is None  # TLS
    custom = requests.Session()
    custom.mount("http://", _PlainAdapter())
    assert http_stream.get(custom, "http://127.0.0.1:9/x", headers, 1.0) is None
    retrying = requests.Session()
    retrying.mount("http://", HTTPAdapter(max_retries=3))
    assert http_stream.get(retrying, "http://127.0.0.1:9/x", headers, 1.0) is None
    proxied = requests.Session()
    proxied.proxies = {"http": "http://proxy.invalid:3128"}
    assert http_stream.get(proxied, "http://127.0.0.1:9/x", headers, 1.0) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert http_stream.get(requests.Session(), "http://10.0.0.1:9/x", headers, 1.0) is None
    digest = requests.Session()
    digest.auth = requests.auth.HTTPDigestAuth("u", "p")  # answers 401 challenges in a response hook
    monkeypatch.delenv("HTTP_PROXY")
    assert http_stream.get(digest, "http://127.0.0.1:9/x", headers, 1.0) is None


def test_an_unreachable_server_raises_a_connection_error():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(requests.ConnectionError, match="cannot connect"):
        http_stream.get(requests.Session(), f"http://127.0.0.1:{port}/x", {}, (1.0, 1.0))
