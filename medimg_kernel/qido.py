"""QIDO-RS queries: the query string servers understand, and DICOM attribute matching.

Two things every DICOMweb client here needs, and that the libraries get wrong for the PACS we run:

* **Wildcards stay literal.** dicomweb-client (and ``urllib.parse.urlencode``) percent-encode
  ``*`` and ``?``. RFC 3986 allows both in a query component unencoded, and Orthanc 1.10's
  DICOMweb plugin takes ``%2A`` for a literal asterisk: ``PatientID=SITEA*`` finds a site's
  studies, ``PatientID=SITEA%2A`` none (and a pattern with ``%28``/``%29`` matches nothing).
  :func:`encode_query` percent-encodes only what RFC 3986 does not allow in a query, and the
  characters that structure one (:data:`LITERAL`).
* **Values with spaces.** The same plugin matches no value that holds a space, whether sent as
  ``%20`` or ``+`` (``SeriesDescription=CT%20ABDOMEN`` finds nothing, ``CT?ABDOMEN`` finds the
  series). :func:`upstream_pairs` sends ``?`` (any one character) in place of each space, and the
  results are then checked against the exact value (:func:`item_matches`), so the answer is the
  one the query asked for on any server.

Matching follows PS3.4 C.2.2.2: single value (exact; person names case-insensitively), wildcard
(``*`` any run, ``?`` one character), range for dates and times (``20200101-20201231``,
``-20201231``, ``20200101-``), UID list (``a,b,c``), universal (empty value); a multi-valued
attribute matches when one of its values does; trailing spaces are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from .errors import MedImgError

#: Query keys that are not attributes (PS3.18 8.3.4).
CONTROL_KEYS = frozenset({"includefield", "limit", "offset", "fuzzymatching", "fuzzymatch"})
#: Characters :func:`encode_query` leaves unencoded in values: every character RFC 3986 allows in a
#: query (sub-delims, ``:``, ``@``, ``/``, ``?``) but the ones that structure it (``&``, ``=``,
#: ``+``). Orthanc 1.10 does not decode ``%2A``, ``%3F``, ``%28`` and ``%29`` in a value it
#: matches with wildcards; sent as themselves they work.
LITERAL = "*?,()!$';:@/"
_RANGE_VRS = ("DA", "TM", "DT")


class QueryError(MedImgError, ValueError):
    """A QIDO-RS query names an attribute that does not exist, or a value it cannot match."""


def attribute(key: str) -> tuple[str, str, str]:
    """``(keyword, tag as 8 hex digits, VR)`` of a query key given as keyword or tag.

    Raises
    ------
    QueryError
        ``key`` is neither a DICOM keyword nor a tag of the standard dictionary.
    """
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        tag = int(key, 16)
        keyword = keyword_for_tag(tag)
    else:
        keyword, tag = key, tag_for_keyword(key)  # type: ignore[assignment]
    if not keyword or tag is None:
        raise QueryError(f"{key!r} is not a DICOM attribute keyword or tag (e.g. InstitutionName or 00080080)")
    return keyword, f"{tag:08X}", dictionary_VR(tag)


def query_pairs(filters: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    """``(key, value)`` pairs from a mapping or pairs; list values become a UID list (``a,b``)."""
    items = filters.items() if isinstance(filters, Mapping) else filters
    pairs = []
    for key, value in items:
        if isinstance(value, (list, tuple, set, frozenset)):
            value = ",".join(str(v) for v in value)
        pairs.append((str(key), str(value)))
    return pairs


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    """The query string (without ``?``): RFC 3986 percent-encoding, ``*``, ``?`` and ``,`` literal."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe=LITERAL)}" for k, v in pairs)


def approximated(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{key: exact value}`` of the attribute filters :func:`upstream_pairs` sends approximately
    (their value holds a space)."""
    return {k: v for k, v in pairs if k not in CONTROL_KEYS and " " in v.strip()}


def upstream_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs to send: each inner space of an attribute value replaced by ``?`` (see above);
    trailing spaces dropped (DICOM pads values with them)."""
    return [(k, v if k in CONTROL_KEYS else v.strip().replace(" ", "?")) for k, v in pairs]


def _values(item: Mapping[str, Any], tag: str) -> list[str] | None:
    """The attribute's values as strings; None when the item does not carry the attribute."""
    element = item.get(tag)
    if element is None:
        return None
    out = []
    for value in element.get("Value", []) or []:
        if isinstance(value, dict):  # PN
            value = value.get("Alphabetic", "")
        out.append(str(value).rstrip())
    return out


def _wildcard(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def value_matches(value: str, pattern: str, vr: str) -> bool:
    """Whether one attribute value matches one QIDO-RS filter value (PS3.4 C.2.2.2)."""
    pattern, value = pattern.rstrip(), value.rstrip()
    if pattern in ("", "*"):
        return True
    if vr == "UI" and "," in pattern:
        return value in pattern.split(",")
    if vr in _RANGE_VRS and "-" in pattern:
        low, _, high = pattern.partition("-")
        return (not low or value[:len(low)] >= low) and (not high or value[:len(high)] <= high)
    case_sensitive = vr != "PN"
    if "*" in pattern or "?" in pattern:
        return _wildcard(pattern, case_sensitive).fullmatch(value) is not None
    return value == pattern if case_sensitive else value.casefold() == pattern.casefold()


def item_matches(item: Mapping[str, Any], filters: Mapping[str, str]) -> bool | None:
    """Whether a QIDO-RS result matches every filter it carries the attribute of.

    Returns True or False when every filtered attribute is in ``item``; None when some are not
    (the caller decides: the gateway keeps the item, :mod:`medimg_kernel.cohort` checks further).
    """
    undecided = False
    for key, pattern in filters.items():
        if key in CONTROL_KEYS:
            continue
        _, tag, vr = attribute(key)
        values = _values(item, tag)
        if values is None:
            undecided = True
            continue
        if not any(value_matches(v, pattern, vr) for v in (values or [""])):
            return False
    return None if undecided else True


def include_fields(filters: Mapping[str, str], existing: Sequence[str] = ()) -> list[str]:
    """``includefield`` values that ask the server to return the filtered attributes (tags)."""
    wanted = [attribute(k)[1] for k in filters if k not in CONTROL_KEYS]
    return [*existing, *[t for t in wanted if t not in existing]]


__all__ = ["CONTROL_KEYS", "LITERAL", "QueryError", "attribute", "query_pairs", "encode_query", "approximated",
           "upstream_pairs", "value_matches", "item_matches", "include_fields"]
