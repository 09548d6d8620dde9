"""Requests to Orthanc with the hub-side credentials, run in worker threads.

A ``requests.Session`` per thread keeps connections to Orthanc alive. WADO-RS bodies are
read from the socket in chunks (:data:`CHUNK_BYTES`) and handed to the caller one at a time,
so a series is never held whole in memory. The credentials never leave this module: they are
not in URLs, and Orthanc's error bodies and authentication headers are not passed on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import requests

log = logging.getLogger(__name__)

#: Bytes read from Orthanc at a time when streaming (at most two chunks are held per response:
#: the one being written to the caller and the next one being read).
CHUNK_BYTES = 4 << 20
#: (connect, read) timeouts in seconds.
TIMEOUT_S = (5.0, 300.0)
#: Orthanc response headers passed to the caller.
PASSED_HEADERS = ("Content-Type", "Content-Length")


class UpstreamError(RuntimeError):
    """Orthanc could not be reached (the gateway answers 502)."""


@dataclass(frozen=True)
class Buffered:
    """A complete (small) Orthanc response."""

    status: int
    headers: dict[str, str]
    body: bytes


class Orthanc:
    """Orthanc's DICOMweb root, reached with the platform's account.

    Parameters
    ----------
    dicomweb_url
        E.g. ``http://127.0.0.1:8042/dicom-web``.
    auth
        (username, password) of the hub-side Orthanc account.
    executor
        Threads the blocking HTTP calls run in.
    """

    def __init__(self, dicomweb_url: str, auth: tuple[str, str], executor: ThreadPoolExecutor) -> None:
        self.dicomweb_url = dicomweb_url.rstrip("/")
        self._auth = auth
        self._executor = executor
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Orthanc({self.dicomweb_url!r})"  # never the credentials

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth
            session.trust_env = False
            self._local.session = session
        return session

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _url(self, path: str, query: str = "") -> str:
        return f"{self.dicomweb_url}/{path}" + (f"?{query}" if query else "")

    def _get(self, path: str, query: str, headers: Mapping[str, str]) -> Buffered:
        try:
            response = self._session().get(self._url(path, query), headers=dict(headers), timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise UpstreamError(f"GET {path}: {type(exc).__name__}") from None
        return Buffered(response.status_code, _passed(response), response.content)

    async def get(self, path: str, query: str = "", headers: Mapping[str, str] | None = None) -> Buffered:
        """GET a small resource (QIDO-RS) and return it whole."""
        return await self._run(self._get, path, query, headers or {})

    def _open(self, path: str, query: str, headers: Mapping[str, str]) -> requests.Response:
        try:
            return self._session().get(self._url(path, query), headers=dict(headers), stream=True, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise UpstreamError(f"GET {path}: {type(exc).__name__}") from None

    async def open_stream(self, path: str, query: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str],
                                                                                          AsyncIterator[bytes]]:
        """GET a resource for streaming: (status, passed headers, chunks). Iterate the chunks to the end."""
        response: requests.Response = await self._run(self._open, path, query, headers)
        return response.status_code, _passed(response), self._chunks(response)

    def _read(self, response: requests.Response) -> bytes:
        try:
            return response.raw.read(CHUNK_BYTES, decode_content=False)
        except (requests.RequestException, OSError) as exc:
            raise UpstreamError(f"reading a response: {type(exc).__name__}") from None

    async def _chunks(self, response: requests.Response) -> AsyncIterator[bytes]:
        """Yield the body in chunks, reading the next chunk while the caller writes the current one."""
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(self._executor, self._read, response)
        try:
            while chunk := await pending:
                pending = loop.run_in_executor(self._executor, self._read, response)
                yield chunk
        finally:
            if not pending.done():
                await asyncio.wait([pending])
            response.close()

    def _post(self, path: str, body: IO[bytes], headers: Mapping[str, str]) -> Buffered:
        try:
            response = self._session().post(self._url(path), data=body, headers=dict(headers), timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise UpstreamError(f"POST {path}: {type(exc).__name__}") from None
        return Buffered(response.status_code, _passed(response), response.content)

    async def post(self, path: str, body: IO[bytes], headers: Mapping[str, str]) -> Buffered:
        """POST a body read from a file (STOW-RS); the file is streamed, not loaded."""
        return await self._run(self._post, path, body, headers)


def _passed(response: requests.Response) -> dict[str, str]:
    return {k: response.headers[k] for k in PASSED_HEADERS if k in response.headers}
