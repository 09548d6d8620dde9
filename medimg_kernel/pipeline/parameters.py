"""Stage parameters: their types, and the checks and coercion of the values a run gives.

Values are coerced as a command line gives them (``"3"`` → 3, ``"true"`` → True);
``study_uid`` / ``series_uid`` values must have DICOM UID syntax (PS3.5 §9.1) and
``model`` values must name a registered model (``name``, ``name/3``, ``name@alias``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ParameterError, PipelineError

_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
#: DICOM UID syntax (PS3.5 §9.1): digit components separated by '.', no leading zeros, ≤ 64 chars.
_UID_RE = re.compile(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$")
#: A registered model: ``name``, ``name/version``, ``name@alias``, optionally as ``models:/...``.
_MODEL_RE = re.compile(r"^(?:models:/)?[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[0-9]+|@[A-Za-z0-9_-]+)?$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def is_identifier(value: object, *, slug: bool) -> bool:
    """Whether ``value`` is a slug (ids, queue names) or a Python identifier (parameter names)."""
    if not isinstance(value, str):
        return False
    return bool(_SLUG_RE.match(value)) if slug else value.isidentifier()


class ParameterType(StrEnum):
    """Types a stage parameter can have."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    ENUM = "enum"
    STUDY_UID = "study_uid"
    SERIES_UID = "series_uid"
    MODEL = "model"


def _coerce(ptype: ParameterType, value: Any, choices: tuple[str, ...]) -> Any:
    """Coerce one value; raises ``ValueError`` with the reason."""
    text = value.strip() if isinstance(value, str) else None
    if ptype is ParameterType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected a bool (true/false, yes/no, 1/0), got {value!r}")
    if ptype is ParameterType.INT:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None and re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text)
        raise ValueError(f"expected an integer, got {value!r}")
    if ptype is ParameterType.FLOAT:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif text is not None:
            try:
                number = float(text)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if text is None:
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r} (quote it in YAML)")
    if ptype is ParameterType.ENUM and text not in choices:
        raise ValueError(f"{text!r} is not one of the choices {list(choices)}")
    if ptype in (ParameterType.STUDY_UID, ParameterType.SERIES_UID):
        if len(text) > 64 or not _UID_RE.match(text):
            raise ValueError(f"{text!r} is not a DICOM UID (digits and dots, no leading zeros, at most 64 characters)")
    if ptype is ParameterType.MODEL and not _MODEL_RE.match(text):
        raise ValueError(f"{text!r} is not a model reference ('name', 'name/3', 'name@champion', 'models:/name/3')")
    return text if ptype is not ParameterType.STRING else value


@dataclass(frozen=True)
class ParameterDescriptor:
    """One parameter of a stage; valid once constructed.

    Attributes
    ----------
    name
        A Python identifier: papermill injects it into the stage notebook as a variable.
    type
        :class:`ParameterType`; UIDs are checked for DICOM UID syntax, ``enum`` against ``choices``.
    required
        The run must give a value; a required parameter has no default.
    default
        Used when the run gives none (coerced to ``type`` at construction).
    choices
        The allowed values of an ``enum`` parameter (strings); only enums have choices.
    description
        Shown to the person who starts the run.
    """

    name: str
    type: ParameterType
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not is_identifier(self.name, slug=False):
            raise PipelineError(f"{self.name!r} is not a Python identifier", field="name")
        try:
            object.__setattr__(self, "type", ParameterType(self.type))
        except ValueError:
            raise PipelineError(
                f"unknown parameter type {self.type!r}; use one of {[t.value for t in ParameterType]}",
                field="type",
            ) from None
        if not isinstance(self.required, bool):
            raise PipelineError(f"must be true or false, got {self.required!r}", field="required")
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.type is ParameterType.ENUM:
            if not self.choices or not all(isinstance(c, str) for c in self.choices):
                raise PipelineError("an enum parameter needs a non-empty list of string choices", field="choices")
            if len(set(self.choices)) != len(self.choices):
                raise PipelineError(f"duplicate choices in {list(self.choices)}", field="choices")
        elif self.choices:
            raise PipelineError("only enum parameters have choices (use type: enum)", field="choices")
        if self.default is not None:
            if self.required:
                raise PipelineError("a required parameter has no default (drop one of them)", field="default")
            try:
                object.__setattr__(self, "default", _coerce(self.type, self.default, self.choices))
            except ValueError as exc:
                raise PipelineError(f"bad default for {self.name!r}: {exc}", field="default") from None

    def coerce(self, value: Any) -> Any:
        """Check ``value`` against this parameter and convert it (``"3"`` → 3 for an int)."""
        try:
            return _coerce(self.type, value, self.choices)
        except ValueError as exc:
            raise ParameterError(self.name, f"parameter {self.name!r} ({self.type.value}): {exc}") from None

    def same_contract(self, other: ParameterDescriptor) -> bool:
        """Whether ``other`` takes the same values (the description may differ)."""
        key = ("type", "required", "default", "choices")
        return all(getattr(self, k) == getattr(other, k) for k in key)
