"""Values of DICOM JSON objects (PS3.18 F.2), as QIDO-RS and WADO-RS metadata return them.

An attribute is ``{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}``: keyed by its tag as
eight upper-case hex digits; an empty attribute has no ``"Value"``. These helpers read
values out of such an object without raising when the attribute or its value is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, overload

__all__ = ["values", "first_value"]

_Default = TypeVar("_Default")


def values(item: Mapping[str, Any], tag: str) -> list[Any]:
    """Every value of attribute ``tag`` in a DICOM JSON object.

    Parameters
    ----------
    item
        One DICOM JSON object (a QIDO-RS result or a WADO-RS metadata item).
    tag
        The attribute's tag as eight hex digits, e.g. ``"0020000D"``.

    Returns
    -------
    list
        The ``"Value"`` list as given (strings, numbers, person-name or sequence objects);
        empty when the attribute is absent or has no value.
    """
    return list(item.get(tag, {}).get("Value") or [])


@overload
def first_value(item: Mapping[str, Any], tag: str) -> str: ...
@overload
def first_value(item: Mapping[str, Any], tag: str, default: _Default) -> str | _Default: ...
def first_value(item: Mapping[str, Any], tag: str, default: Any = "") -> Any:
    """The first value of attribute ``tag`` in a DICOM JSON object, as a string.

    Parameters
    ----------
    item
        One DICOM JSON object (a QIDO-RS result or a WADO-RS metadata item).
    tag
        The attribute's tag as eight hex digits, e.g. ``"0020000D"``.
    default
        Returned when the attribute is absent or has no value (default ``""``).

    Returns
    -------
    str
        ``str()`` of the first value, e.g. a StudyInstanceUID; ``default`` when there is none.
    """
    found = values(item, tag)
    return str(found[0]) if found else default
