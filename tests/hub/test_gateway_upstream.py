"""The gateway's link to the PACS: a connection the PACS drops is retried once for a GET (QIDO-RS is
idempotent), and a PACS that keeps dropping them is an UpstreamError, not a hang. A real socket
server that closes its first connection without answering, as a server closing a stale keep-alive
connection does."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from medimg_hub.pacs.connection import PacsConnection
from medimg_hub.platform_api.gateway.upstream import Orthanc, UpstreamError

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\n\r\n[]"


def dropping_server(drops: int) -> tuple[int, list[int], threading.Event]:
    """A server on a free loopback port that closes its first ``drops`` connections at once, then answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port, served, stop = listener.getsockname()[1], [0], threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                served[0] += 1
                if served[0] > drops:
                    conn.sendall(ANSWER)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return port, served, stop


@pytest.mark.parametrize(("drops", "ok"), [(1, True), (5, False)])
def test_a_dropped_connection_is_retried_once(drops: int, ok: bool) -> None:
    port, served, stop = dropping_server(drops)
    orthanc = Orthanc(PacsConnection(f"http://127.0.0.1:{port}/dicom-web", basic=("u", "p")), ThreadPoolExecutor(2))
    try:
        if ok:
            answer = asyncio.run(orthanc.get("studies", "limit=1"))
            assert (answer.status, answer.body) == (200, b"[]") and served[0] == 2
        else:
            with pytest.raises(UpstreamError, match="GET studies: ConnectionError"):
                asyncio.run(orthanc.get("studies", "limit=1"))
            assert served[0] == 2  # one retry, not a loop
    finally:
        stop.set()
