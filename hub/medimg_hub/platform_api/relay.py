"""Zero-copy relay of a WADO-RS response body from Orthanc to the caller (Linux ``splice``).

After the gateway has authenticated the caller and checked the grant, the response body does not
need to pass through Python: :func:`open_orthanc` sends the request on a socket of its own
(Orthanc's credentials in the header, ``Connection: close``), reads the status line and headers,
and :func:`relay` moves the body from that socket to the caller's with ``splice(2)`` through a
pipe, in the kernel, in pieces of :data:`PIPE_BYTES`. The body's framing (chunked or sized) is
passed on unchanged, with the same ``Transfer-Encoding`` / ``Content-Length``; the caller's
connection is closed afterwards. The caller reading slowly blocks the relay (back-pressure);
nothing is ever held whole in memory.

Where ``os.splice`` does not exist (not Linux), :data:`AVAILABLE` is False and the gateway
streams through :mod:`.upstream` instead.
"""

from __future__ import annotations

import base64
import fcntl
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Whether this system can splice (Linux, Python ≥ 3.10).
AVAILABLE = hasattr(os, "splice")
#: Pipe capacity and largest single splice (bytes).
PIPE_BYTES = 1 << 20
#: Largest response head read from Orthanc (status line + headers).
MAX_HEAD_BYTES = 64 << 10
#: Seconds to connect to Orthanc and to wait for its response head.
CONNECT_TIMEOUT_S = 5.0
HEAD_TIMEOUT_S = 300.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RelayError(OSError):
    """Orthanc could not be reached or answered something that is not HTTP."""


@dataclass
class OrthancResponse:
    """An Orthanc response whose body is still on ``sock`` (``body_start``: body bytes already read)."""

    sock: socket.socket
    status: int
    headers: dict[str, str]
    body_start: bytes

    def close(self) -> None:
        self.sock.close()


def open_orthanc(url: str, auth: tuple[str, str], headers: dict[str, str]) -> OrthancResponse:
    """GET ``url`` (an Orthanc URL with path and query) and read the response head (blocking).

    Raises
    ------
    RelayError
        Orthanc unreachable, or a response head that is not HTTP/1.x.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Basic {token}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise RelayError(f"cannot connect to Orthanc: {type(exc).__name__}") from None
    try:
        sock.settimeout(HEAD_TIMEOUT_S)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data or len(head) > MAX_HEAD_BYTES:
                raise RelayError("Orthanc closed the connection or sent an oversized head")
            head += data
        sock.settimeout(None)
        raw_head, body_start = head.split(b"\r\n\r\n", 1)
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise RelayError("Orthanc's answer is not HTTP/1.x")
        found: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            found[name.strip().lower()] = value.strip()
        return OrthancResponse(sock, int(status), found, body_start)
    except (OSError, ValueError) as exc:
        sock.close()
        if isinstance(exc, RelayError):
            raise
        raise RelayError(f"reading Orthanc's answer: {type(exc).__name__}") from None


def relay(source: socket.socket, target: socket.socket, head: bytes) -> int:
    """Send ``head`` to ``target``, then splice everything ``source`` sends until it closes (blocking).

    Returns the number of bytes sent to ``target`` (``head`` included). ``target`` must be in
    blocking mode. Raises ``OSError`` (e.g. ``BrokenPipeError``) when the caller goes away.
    """
    target.sendall(head)
    sent = len(head)
    pipe_r, pipe_w = os.pipe()
    try:
        try:
            fcntl.fcntl(pipe_w, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default pipe size (64 kB) works, just with more calls
        src, dst = source.fileno(), target.fileno()
        while True:
            moved = os.splice(src, pipe_w, PIPE_BYTES)
            if moved == 0:
                return sent
            while moved:
                out = os.splice(pipe_r, dst, moved)
                moved -= out
                sent += out
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
