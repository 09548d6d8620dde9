"""DICOMweb clients: a DICOMweb server over HTTP, or a local folder, behind one protocol.

Both implement :class:`medimg_kernel.dicomweb.DICOMwebProtocol`. The HTTP client
wraps dicomweb-client's ``DICOMwebClient``; authentication is injected as a
``requests.Session`` (never stored in the client), and HTTP failures become
:class:`~medimg_kernel.errors.DICOMwebError` subclasses that say which request
failed and why. Retrieval streams (``iter_*``) and asks for the stored transfer
syntax, so nothing is transcoded on the server; on plain HTTP it reads the socket
itself (:mod:`medimg_kernel.http_stream`, with the session's headers and auth), so
each instance's pixel data is received straight into its ``PixelData``.

QIDO-RS is our own GET, not dicomweb-client's: it percent-encodes the wildcards ``*`` and ``?``,
which Orthanc then matches literally, and cannot match values with spaces there
(:mod:`medimg_kernel.qido` says what is sent instead and how the answer is made exact).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3
from dicomweb_client import DICOMfileClient, DICOMwebClient
from pydicom.dataset import Dataset

from . import http_stream, qido
from .dicomweb import DicomJSON
from .errors import AccessDeniedError, ConfigurationError, DICOMwebError, NotFoundError
from .multipart import ReadAhead, boundary_from_content_type, dataset_from_part, iter_parts

log = logging.getLogger(__name__)

#: Environment variables read by :func:`connect` (set in every platform user server).
URL_ENV_VAR = "MEDIMG_DICOMWEB_URL"
TOKEN_ENV_VAR = "JUPYTERHUB_API_TOKEN"

#: Bytes read from the socket at a time when streaming WADO-RS responses.
STREAM_CHUNK_BYTES = 8 * 1024 * 1024
#: Ask for instances as stored: no transcoding on the server.
STORED_TRANSFER_SYNTAX = (("application/dicom", "*"),)
ACCEPT_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Attempts and exponential back-off base (ms) for QIDO/STOW requests that fail transiently.
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_MS = 100
#: Seconds: (connect, read) timeouts of every request.
DEFAULT_TIMEOUT_S = (5.0, 300.0)

T = TypeVar("T")

#: A DICOM UID (PS3.5 §9.1): digits and dots, at most 64 characters.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _translate_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn requests' exceptions into DICOMwebError subclasses naming the transaction."""

    @functools.wraps(method)
    def wrapper(self: DICOMwebHTTPClient, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except requests.HTTPError as exc:
            raise _http_error(method.__name__, self.url, exc) from exc
        except requests.RequestException as exc:
            raise DICOMwebError(
                f"{method.__name__}: cannot reach the DICOMweb server at {self.url}: {exc}", url=self.url
            ) from exc

    return wrapper


def _http_error(transaction: str, url: str, exc: requests.HTTPError, resource: str = "") -> DICOMwebError:
    status = exc.response.status_code if exc.response is not None else None
    detail = ""
    if exc.response is not None and exc.response.text:
        detail = ": " + exc.response.text.strip().splitlines()[0][:200]
    target = f" of {resource}" if resource else ""
    message = f"{transaction}{target} failed with HTTP {status} from {url}{detail}"
    if status == 404:
        return NotFoundError(message, status=status, url=url)
    if status in (401, 403):
        hint = " (check the token or credentials, and that your group is granted this dataset)"
        return AccessDeniedError(message + hint, status=status, url=url)
    return DICOMwebError(message, status=status, url=url)


class _QidoByDelegation:
    """QIDO-RS verbs handed to a dicomweb-client object (``self._client``), errors translated."""

    url: str
    _client: Any

    @_translate_errors
    def search_for_studies(self, *, search_filters: dict[str, Any] | None = None,
                           fields: Sequence[str] | None = None, limit: int | None = None,
                           offset: int | None = None) -> list[DicomJSON]:
        return self._client.search_for_studies(
            search_filters=search_filters, fields=fields, limit=limit, offset=offset
        )

    @_translate_errors
    def search_for_series(self, study_instance_uid: str | None = None, *,
                          search_filters: dict[str, Any] | None = None, fields: Sequence[str] | None = None,
                          limit: int | None = None, offset: int | None = None) -> list[DicomJSON]:
        return self._client.search_for_series(
            study_instance_uid, search_filters=search_filters, fields=fields, limit=limit, offset=offset
        )

    @_translate_errors
    def search_for_instances(self, study_instance_uid: str | None = None,
                             series_instance_uid: str | None = None, *,
                             search_filters: dict[str, Any] | None = None, fields: Sequence[str] | None = None,
                             limit: int | None = None, offset: int | None = None) -> list[DicomJSON]:
        return self._client.search_for_instances(
            study_instance_uid, series_instance_uid, search_filters=search_filters, fields=fields,
            limit=limit, offset=offset,
        )



class DICOMwebHTTPClient:
    """A DICOMweb origin server (the platform gateway, Orthanc, any PACS) over HTTP.

    Parameters
    ----------
    url
        Base URL of the DICOMweb service, e.g. ``http://127.0.0.1:8042/dicom-web``.
    session
        A ``requests.Session`` carrying authentication (basic auth, a bearer or
        JupyterHub token header). The client does not modify it.
    timeout
        ``(connect, read)`` timeouts in seconds.
    """

    def __init__(
        self, url: str, *, session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session or requests.Session()
        self._timeout = timeout
        self._client = DICOMwebClient(
            self.url, session=self._session, chunk_size=STREAM_CHUNK_BYTES, timeout=timeout
        )
        # dicomweb-client retries failed requests (and refused connections) with exponential
        # back-off of 1 s × 2^n, 30 s in all; keep retries for 429/503 but fail fast.
        self._client.set_http_retry_params(
            retry=True, max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=RETRY_BACKOFF_MS
        )

    def __repr__(self) -> str:
        return f"DICOMwebHTTPClient({self.url!r})"

    @_translate_errors
    def search_for_studies(self, *, search_filters: dict[str, Any] | None = None,
                           fields: Sequence[str] | None = None, limit: int | None = None,
                           offset: int | None = None) -> list[DicomJSON]:
        return self._search("studies", search_filters, fields, limit, offset)

    @_translate_errors
    def search_for_series(self, study_instance_uid: str | None = None, *,
                          search_filters: dict[str, Any] | None = None, fields: Sequence[str] | None = None,
                          limit: int | None = None, offset: int | None = None) -> list[DicomJSON]:
        path = f"studies/{self._uid(study_instance_uid)}/series" if study_instance_uid else "series"
        return self._search(path, search_filters, fields, limit, offset)

    @_translate_errors
    def search_for_instances(self, study_instance_uid: str | None = None,
                             series_instance_uid: str | None = None, *,
                             search_filters: dict[str, Any] | None = None, fields: Sequence[str] | None = None,
                             limit: int | None = None, offset: int | None = None) -> list[DicomJSON]:
        path = "instances"
        if series_instance_uid:
            if not study_instance_uid:
                raise ConfigurationError("search_for_instances: a series UID needs its study UID")
            path = f"studies/{self._uid(study_instance_uid)}/series/{self._uid(series_instance_uid)}/instances"
        elif study_instance_uid:
            path = f"studies/{self._uid(study_instance_uid)}/instances"
        return self._search(path, search_filters, fields, limit, offset)

    @staticmethod
    def _uid(uid: str) -> str:
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise ConfigurationError(f"{uid!r} is not a valid DICOM UID")
        return uid

    def _search(self, path: str, search_filters: dict[str, Any] | None, fields: Sequence[str] | None,
                limit: int | None, offset: int | None) -> list[DicomJSON]:
        """GET ``path`` with the query encoded by :mod:`medimg_kernel.qido`; results matching exactly.

        A filter value with a space is sent with ``?`` in its place; results that carry the
        attribute are checked against the exact value, and paging is then applied here.
        """
        pairs = qido.query_pairs(search_filters or {})
        exact = qido.approximated(pairs)
        pairs += [("includefield", f) for f in qido.include_fields(exact, list(fields or []))]
        paging = [("limit", str(limit))] if limit is not None else []
        paging += [("offset", str(offset))] if offset else []
        url = f"{self.url}/{path}?{qido.encode_query(qido.upstream_pairs(pairs + ([] if exact else paging)))}"
        response = self._get_with_retries(url)
        if response.status_code == 204 or not response.content.strip():
            return []
        items: list[DicomJSON] = response.json()
        if exact:
            items = [i for i in items if qido.item_matches(i, exact) is not False]
            start = offset or 0
            items = items[start:start + limit if limit is not None else None]
        return items

    def _get_with_retries(self, url: str) -> requests.Response:
        """GET ``url`` as DICOM JSON; 429/503 retried (``RETRY_ATTEMPTS``, exponential back-off)."""
        for attempt in range(RETRY_ATTEMPTS):
            response = self._session.get(url, headers={"Accept": "application/dicom+json"}, timeout=self._timeout)
            if response.status_code not in (429, 503) or attempt == RETRY_ATTEMPTS - 1:
                break
            time.sleep(RETRY_BACKOFF_MS / 1000 * 2 ** attempt)
        response.raise_for_status()
        return response

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        return list(self.iter_series(study_instance_uid, series_instance_uid))

    def iter_series(self, study_instance_uid: str, series_instance_uid: str) -> Iterator[Dataset]:
        return self._stream("iter_series", f"/studies/{study_instance_uid}/series/{series_instance_uid}")

    def retrieve_study(self, study_instance_uid: str) -> list[Dataset]:
        return list(self._stream("retrieve_study", f"/studies/{study_instance_uid}"))

    def retrieve_instance(self, study_instance_uid: str, series_instance_uid: str,
                          sop_instance_uid: str) -> Dataset:
        path = f"/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
        found = list(self._stream("retrieve_instance", path))
        if len(found) != 1:
            raise DICOMwebError(f"retrieve_instance: expected one instance, got {len(found)}", url=self.url)
        return found[0]

    @_translate_errors
    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[DicomJSON]:
        return self._client.retrieve_series_metadata(study_instance_uid, series_instance_uid)

    @_translate_errors
    def store_instances(self, datasets: Sequence[Dataset], study_instance_uid: str | None = None, *,
                        dataset: str | None = None) -> Dataset:
        """STOW-RS; ``dataset`` (the platform gateway only) names the dataset new studies go into."""
        if not datasets:
            raise ConfigurationError("store_instances needs at least one dataset")
        if dataset is None:
            return self._client.store_instances(list(datasets), study_instance_uid)
        encoded = []
        for ds in datasets:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            encoded.append(buffer.getvalue())
        return self.store_files(encoded, study_instance_uid, dataset=dataset)

    @_translate_errors
    def store_files(self, files: Sequence[bytes], study_instance_uid: str | None = None, *,
                    dataset: str | None = None) -> Dataset:
        """STOW-RS of DICOM Part 10 files as they are (bytes: nothing decoded or re-encoded here).

        The fast path of imports and the DICOM receiver: a file read from disk goes to the server
        byte for byte. ``dataset`` as in :meth:`store_instances`. Returns the STOW-RS response
        (``FailedSOPSequence`` lists refused instances).
        """
        if not files:
            raise ConfigurationError("store_files needs at least one file")
        boundary = os.urandom(16).hex()
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        parts: list[bytes] = []
        for blob in files:
            parts += [head, blob, b"\r\n"]
        parts.append(f"--{boundary}--\r\n".encode())
        path = f"studies/{self._uid(study_instance_uid)}" if study_instance_uid else "studies"
        query = f"?{qido.encode_query([('dataset', dataset)])}" if dataset else ""
        response = self._session.post(
            f"{self.url}/{path}{query}", data=b"".join(parts), timeout=self._timeout,
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                     "Accept": "application/dicom+json"})
        response.raise_for_status()
        return Dataset.from_json(response.json()) if response.content.strip() else Dataset()

    def _stream(self, name: str, path: str) -> Iterator[Dataset]:
        """GET a WADO-RS resource and yield its instances while the response arrives.

        On plain HTTP the response is read on the socket (:mod:`medimg_kernel.http_stream`: the
        pixel data of each instance lands in its own ``bytes`` straight from the kernel); where
        the session needs requests (TLS, a proxy, retries, digest auth, a redirect) through
        requests, with a read-ahead thread. Both give the same datasets and the same errors.
        """
        for uid in path.split("/"):
            if uid and uid not in ("studies", "series", "instances") and (len(uid) > 64 or not _UID.fullmatch(uid)):
                raise ConfigurationError(f"{name}: {uid!r} is not a valid DICOM UID")
        url = self.url + path
        try:
            stream = http_stream.get(self._session, url, {"Accept": ACCEPT_STORED}, self._timeout)
            if stream is not None:
                with stream:
                    if stream.status >= 400:
                        stream.to_response().raise_for_status()
                    boundary = boundary_from_content_type(stream.headers.get("Content-Type", ""))
                    for index, part in enumerate(iter_parts(stream.body, boundary)):
                        yield dataset_from_part(part, index)
                return
            response = self._session.get(url, headers={"Accept": ACCEPT_STORED}, stream=True, timeout=self._timeout)
            with response:
                if response.status_code >= 400:
                    response.content  # noqa: B018 - read while open: the error message quotes it
                    response.raise_for_status()
                boundary = boundary_from_content_type(response.headers.get("Content-Type", ""))
                response.raw.decode_content = True
                reader = ReadAhead(response.raw, STREAM_CHUNK_BYTES)
                try:
                    for index, body in enumerate(iter_parts(reader, boundary, STREAM_CHUNK_BYTES)):
                        yield dataset_from_part(body, index)
                finally:
                    reader.close()
        except requests.HTTPError as exc:
            raise _http_error(name, self.url, exc, path) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # urllib3's: from response.raw
            raise DICOMwebError(f"{name}: cannot reach the DICOMweb server at {self.url}: {exc}",
                                url=self.url) from exc


class DICOMfolderClient(_QidoByDelegation):
    """A local folder of DICOM files, served with the same verbs as a DICOMweb server.

    Wraps dicomweb-client's ``DICOMfileClient`` (which indexes the folder in a
    SQLite database). Useful offline, in tests and at a federated site that keeps
    its images as files.

    Parameters
    ----------
    folder
        The folder; files are indexed recursively. Stored instances are written into it.
    """

    def __init__(self, folder: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ConfigurationError(f"DICOM folder {self.folder} does not exist or is not a folder")
        self.url = self.folder.as_uri()
        self._client = DICOMfileClient(self.url, update_db=True, in_memory=True, readonly=readonly)

    def __repr__(self) -> str:
        return f"DICOMfolderClient({str(self.folder)!r})"

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        return list(self.iter_series(study_instance_uid, series_instance_uid))

    def iter_series(self, study_instance_uid: str, series_instance_uid: str) -> Iterator[Dataset]:
        found = self._client.search_for_instances(study_instance_uid, series_instance_uid, limit=1)
        if not found:
            raise NotFoundError(f"series {series_instance_uid} is not in {self.folder}", status=404, url=self.url)
        return self._client.iter_series(study_instance_uid, series_instance_uid)

    def retrieve_study(self, study_instance_uid: str) -> list[Dataset]:
        if not self._client.search_for_series(study_instance_uid, limit=1):
            raise NotFoundError(f"study {study_instance_uid} is not in {self.folder}", status=404, url=self.url)
        return list(self._client.iter_study(study_instance_uid))

    def retrieve_instance(self, study_instance_uid: str, series_instance_uid: str,
                          sop_instance_uid: str) -> Dataset:
        try:
            return self._client.retrieve_instance(study_instance_uid, series_instance_uid, sop_instance_uid)
        except (IndexError, KeyError, ValueError, FileNotFoundError) as exc:
            raise NotFoundError(
                f"instance {sop_instance_uid} is not in {self.folder}", status=404, url=self.url
            ) from exc

    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[DicomJSON]:
        return self._client.retrieve_series_metadata(study_instance_uid, series_instance_uid)

    def store_instances(self, datasets: Sequence[Dataset], study_instance_uid: str | None = None) -> Dataset:
        if not datasets:
            raise ConfigurationError("store_instances needs at least one dataset")
        return self._client.store_instances(list(datasets), study_instance_uid)


def connect(
    url: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    session: requests.Session | None = None,
) -> DICOMwebHTTPClient | DICOMfolderClient:
    """Open the platform's image store.

    Inside a platform user server, ``connect()`` needs no arguments: the gateway
    URL comes from ``MEDIMG_DICOMWEB_URL`` and the user's JupyterHub token from
    ``JUPYTERHUB_API_TOKEN``. Elsewhere pass them explicitly.

    Parameters
    ----------
    url
        ``http(s)://…`` for a DICOMweb server, or a folder path / ``file://`` URL
        for a local folder of DICOM files.
    token
        A JupyterHub API token, sent as ``Authorization: token …``.
    session
        A prepared ``requests.Session`` (e.g. with basic auth); takes precedence
        over ``token``.
    """
    target = str(url) if url is not None else os.environ.get(URL_ENV_VAR, "")
    if not target:
        raise ConfigurationError(
            f"connect() needs a DICOMweb URL: pass url=... or set {URL_ENV_VAR} "
            "(set automatically inside platform user servers)"
        )
    if target.startswith("file://"):
        return DICOMfolderClient(target[len("file://"):])
    if not target.startswith(("http://", "https://")):
        return DICOMfolderClient(target)
    if session is None:
        session = requests.Session()
        token = token if token is not None else os.environ.get(TOKEN_ENV_VAR)
        if token:
            session.headers["Authorization"] = f"token {token}"
    return DICOMwebHTTPClient(target, session=session)
