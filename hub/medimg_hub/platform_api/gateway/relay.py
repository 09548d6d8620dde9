"""Zero-copy relay of a WADO-RS response body from Orthanc to the caller (Linux ``splice``).

After the gateway has authenticated the caller and checked the grant, the response body does not
need to pass through Python: :func:`open_orthanc` sends the request on a socket of its own
(Orthanc's credentials in the header, ``Connection: close``), reads the status line and headers,
and :func:`relay` moves the body from that socket to the caller's with ``splice(2)`` through a
pipe, in the kernel, in pieces of :data:`PIPE_BYTES`. The body's framing (chunked or sized) is
passed on unchanged, with the same ``Transfer-Encoding`` / ``Content-Length``; the caller's
connection is closed afterwards. The caller reading slowly blocks the relay (back-pressure);
nothing is ever held whole in memory.

**Who owns the descriptors.** The relay runs in a worker thread and works on descriptor
*numbers*. If anything else closed the caller's socket while it ran (tornado does, as soon as it
sees the caller hang up), the number would be handed to the next accepted connection and the rest
of the body would go to whoever opened it: another user. So the relay never borrows a socket:
:func:`adopt` gives it a duplicate descriptor of the caller's connection that nothing else holds
(the web server's own descriptor is closed at once), and :func:`relay` closes both of its sockets
itself, in its own thread, after its last write. A descriptor number can therefore only be reused
once the relay has stopped using it, whatever happens to the request on the event loop
(caller gone, handler cancelled, server stopping). Stalls on either side end the relay after
:data:`STALL_TIMEOUT_S` (``SO_RCVTIMEO`` / ``SO_SNDTIMEO``, which ``splice`` honours).

Where ``os.splice`` does not exist (not Linux), :data:`AVAILABLE` is False and the gateway
streams through :mod:`.upstream` instead; so it does for TLS connections (nothing to splice).
"""

from __future__ import annotations

import base64
import fcntl
import os
import socket
import struct
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
#: Seconds without progress (Orthanc sending nothing, or the caller reading nothing) that end a relay.
STALL_TIMEOUT_S = 300.0
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


@dataclass(frozen=True)
class RelayResult:
    """How a relay ended.

    Attributes
    ----------
    sent
        Bytes written to the caller (the head included).
    failed
        ``None`` when Orthanc's body was passed on whole; ``"caller"`` when writing to the caller
        failed (it closed the connection, or stopped reading for :data:`STALL_TIMEOUT_S`);
        ``"orthanc"`` when reading from Orthanc failed or stalled.
    """

    sent: int
    failed: str | None = None


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
        _stall_timeout(sock, socket.SO_RCVTIMEO)
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


def adopt(caller: socket.socket) -> socket.socket:
    """A blocking socket of the caller's connection, on a descriptor only the relay holds.

    The caller's web server must close its own socket right after (tornado: ``IOStream.close()``
    once the handler has detached): the connection then stays open through the returned socket
    alone, and ends when :func:`relay` closes it.
    """
    own = caller.dup()
    try:
        own.setblocking(True)  # O_NONBLOCK is shared with the server's descriptor: set it after dup
        _stall_timeout(own, socket.SO_SNDTIMEO)
    except OSError:
        own.close()
        raise
    return own


def relay(source: socket.socket, target: socket.socket, head: bytes) -> RelayResult:
    """Send ``head`` to ``target``, then splice everything ``source`` sends until it closes (blocking).

    Both sockets belong to the relay from the call on: they are closed here, after the last write,
    whatever happens (``target`` from :func:`adopt`, ``source`` from :func:`open_orthanc`).
    Never raises for a failing peer: the result says which side failed.
    """
    sent = 0
    try:
        try:
            target.sendall(head)
        except OSError:
            return RelayResult(sent, "caller")
        sent = len(head)
        pipe_r, pipe_w = os.pipe()
        try:
            try:
                fcntl.fcntl(pipe_w, _F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:
                pass  # the default pipe size (64 kB) works, just with more calls
            src, dst = source.fileno(), target.fileno()
            while True:
                try:
                    moved = os.splice(src, pipe_w, PIPE_BYTES)
                except OSError:
                    return RelayResult(sent, "orthanc")
                if moved == 0:
                    return RelayResult(sent)
                while moved:
                    try:
                        out = os.splice(pipe_r, dst, moved)
                    except OSError:
                        return RelayResult(sent, "caller")
                    moved -= out
                    sent += out
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
    finally:
        source.close()
        target.close()


def _stall_timeout(sock: socket.socket, option: int) -> None:
    """Make blocking reads (``SO_RCVTIMEO``) or writes (``SO_SNDTIMEO``) fail after :data:`STALL_TIMEOUT_S`."""
    seconds = int(STALL_TIMEOUT_S)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", seconds, int((STALL_TIMEOUT_S - seconds) * 1e6)))
