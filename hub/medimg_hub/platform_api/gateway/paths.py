"""Which DICOMweb resource a request names, validated before anything is forwarded.

Only the DICOMweb transactions listed here reach Orthanc, and only under its DICOMweb root:
anything else (``/tools``, ``/instances``, ``..``, percent-encoded or doubled slashes,
malformed UIDs, control characters in query values) is refused with :class:`BadRequest`
(400) or :class:`NoSuchRoute` (404) without a request to Orthanc.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from medimg_kernel import qido

#: A DICOM UID (PS3.5 §9.1): digits and dots, at most 64 characters.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_FRAMES = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")
#: A bulk data path below an instance, as Orthanc writes BulkDataURIs: tags, and item indexes in sequences.
_BULK = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*")
#: Query keys: DICOM keywords, tags, and the QIDO-RS parameters (letters, digits, dots).
_QUERY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(ValueError):
    """A malformed request (400); ``detail`` goes to the audit log and to the caller (it describes the
    request's syntax, never data)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NoSuchRoute(LookupError):
    """A path outside the DICOMweb transactions the gateway serves (404)."""


class Transaction(StrEnum):
    QIDO = "qido"
    WADO = "wado"
    STOW = "stow"


@dataclass(frozen=True)
class DicomPath:
    """A validated DICOMweb resource below the gateway's ``dicom-web/`` root."""

    transaction: Transaction
    segments: tuple[str, ...]
    study: str | None = None
    series: str | None = None
    sop: str | None = None

    @property
    def path(self) -> str:
        """The path below the DICOMweb root, e.g. ``studies/1.2/series``."""
        return "/".join(self.segments)

    @property
    def resource(self) -> str:
        """What a WADO-RS path retrieves: ``instances`` (the objects themselves), ``metadata``,
        ``rendered``, ``frames`` or ``bulk`` (the first segment after the last UID)."""
        depth = 0
        while 2 * depth + 1 < len(self.segments) and self.segments[2 * depth] == ("studies", "series", "instances")[depth]:
            depth += 1
            if depth == 3:
                break
        tail = self.segments[2 * depth:]
        return tail[0] if tail else "instances"

    @property
    def level(self) -> str:
        """Metric label: the path with UIDs replaced, e.g. ``studies/{study}/series``."""
        if self.resource == "bulk":
            return "studies/{study}/series/{series}/instances/{sop}/bulk/{tag}"
        names = iter(("{study}", "{series}", "{sop}", "{frames}"))
        return "/".join(s if not (_UID.fullmatch(s) or _FRAMES.fullmatch(s)) else next(names, "{uid}")
                        for s in self.segments)


def check_uid(value: str, what: str) -> str:
    """``value`` if it is a valid DICOM UID, else :class:`BadRequest`."""
    if len(value) > 64 or not _UID.fullmatch(value):
        raise BadRequest(f"malformed {what}")
    return value


def _raw_segments(raw_path: str, root: str) -> list[str]:
    if not raw_path.startswith(root):
        raise NoSuchRoute(raw_path)
    rest = raw_path[len(root):]
    if "%" in rest or "\\" in rest or "//" in rest or _CONTROL.search(rest):
        raise BadRequest("encoded, doubled or control characters in the path")
    segments = rest.split("/")
    if segments and segments[-1] == "":
        segments.pop()
    if any(s in (".", "..") for s in segments):
        raise BadRequest("path traversal")
    if "" in segments:
        raise BadRequest("empty path segment")
    return segments


def _uids(segments: list[str]) -> tuple[str | None, str | None, str | None]:
    named = {"studies": None, "series": None, "instances": None}
    for i in range(0, len(segments) - 1, 2):
        if segments[i] in named:
            named[segments[i]] = check_uid(segments[i + 1], segments[i])
    return named["studies"], named["series"], named["instances"]


_WADO_TAILS = ((), ("metadata",), ("rendered",))


def _wado_shape(segments: list[str]) -> bool:
    """Whether ``segments`` is a WADO-RS resource (study/series/instance, metadata, rendered, frames, bulk data)."""
    keys = ["studies", "series", "instances"]
    depth = 0
    while depth < 3 and 2 * depth + 1 < len(segments) and segments[2 * depth] == keys[depth]:
        depth += 1
    if depth == 0:
        return False
    tail = tuple(segments[2 * depth:])
    if tail in _WADO_TAILS:
        return True
    if depth == 3 and len(tail) >= 2 and tail[0] == "bulk":
        return bool(_BULK.fullmatch("/".join(tail[1:])))
    return depth == 3 and len(tail) in (2, 3) and tail[0] == "frames" and bool(_FRAMES.fullmatch(tail[1])) \
        and tail[2:] in ((), ("rendered",))


def parse_dicomweb_path(raw_path: str, root: str, method: str) -> DicomPath:
    """Classify and validate a request path.

    Parameters
    ----------
    raw_path
        The request's path as received (still percent-encoded).
    root
        The gateway's DICOMweb root, e.g. ``/services/platform/dicom-web/``.
    method
        ``GET`` (QIDO-RS, WADO-RS) or ``POST`` (STOW-RS).
    """
    segments = _raw_segments(raw_path, root)
    study, series, sop = _uids(segments)
    shape = tuple(s if s in ("studies", "series", "instances") else "*" for s in segments)
    if method == "POST":
        if shape in (("studies",), ("studies", "*")):
            return DicomPath(Transaction.STOW, tuple(segments), study)
        raise NoSuchRoute(raw_path)
    if method != "GET":
        raise NoSuchRoute(raw_path)
    qido = {("studies",), ("series",), ("instances",), ("studies", "*", "series"), ("studies", "*", "instances"),
            ("studies", "*", "series", "*", "instances")}
    if shape in qido:
        return DicomPath(Transaction.QIDO, tuple(segments), study, series, sop)
    if _wado_shape(segments):
        return DicomPath(Transaction.WADO, tuple(segments), study, series, sop)
    raise NoSuchRoute(raw_path)


def clean_query(arguments: Mapping[str, Iterable[bytes]]) -> list[tuple[str, str]]:
    """The query's (key, value) pairs, refusing odd keys and control characters (header/CRLF injection)."""
    pairs = []
    for key, values in arguments.items():
        if not _QUERY_KEY.fullmatch(key):
            raise BadRequest("malformed query key")
        for raw in values:
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest("query value is not UTF-8") from exc
            if _CONTROL.search(value) or len(value) > 4096:
                raise BadRequest("control characters or oversized query value")
            pairs.append((key, value))
    return pairs


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    """A query string from validated pairs (re-encoded: nothing is passed through raw), with the
    QIDO-RS wildcards ``*``/``?`` and the UID-list ``,`` literal (Orthanc matches ``%2A`` as a
    literal asterisk: :mod:`medimg_kernel.qido`)."""
    return qido.encode_query(pairs)


def clean_header(value: str | None, default: str) -> str:
    """A header value safe to forward (no CR, LF or other control characters), else ``default``."""
    if not value:
        return default
    if _CONTROL.search(value) or len(value) > 1024:
        raise BadRequest("control characters in a forwarded header")
    return value
