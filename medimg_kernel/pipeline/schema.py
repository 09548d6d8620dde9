"""The ``pipeline.yaml`` format: a parsed descriptor checked key by key and turned into descriptors.

A pipeline lives in one folder, ``notebooks/pipelines/<id>/``: a ``pipeline.yaml``
descriptor and the stage notebooks beside it::

    id: example-echo              # must equal the folder name
    name: Echo
    version: "1.0"                # a quoted string
    description: ...
    stages:
      - id: echo
        name: Echo the message
        kind: auto                # auto: a notebook run by a worker; manual: a person decides
        notebook: echo.ipynb      # auto only, relative to the folder
        worker_group: default     # auto only: the Celery queue (software environment)
        timeout_s: 60             # auto only; default 3600
        retry: {max_attempts: 2, backoff_s: 5, backoff_factor: 2, max_backoff_s: 600}
        parameters:
          - {name: message, type: string, default: hello, description: ...}
      - id: review
        kind: manual
        dashboard: review         # manual only: the Voila dashboard that shows the job
        depends_on: [echo]

Refusals are :class:`~medimg_kernel.errors.PipelineError` whose ``field`` names the
offending field (``stages[1].parameters[0].default``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..errors import PipelineError
from .parameters import ParameterDescriptor
from .stages import RetryPolicy, StageDescriptor

__all__ = ["pipeline_fields"]

_PIPELINE_KEYS = {"id", "name", "version", "description", "stages"}
_STAGE_KEYS = {
    "id", "name", "kind", "notebook", "dashboard", "worker_group", "parameters", "depends_on",
    "timeout_s", "retry", "description",
}
_PARAMETER_KEYS = {"name", "type", "required", "default", "choices", "description"}
_RETRY_KEYS = {"max_attempts", "backoff_s", "backoff_factor", "max_backoff_s"}


@contextmanager
def _field(prefix: str) -> Iterator[None]:
    """Prefix the ``field`` of any :class:`PipelineError` raised inside the block."""
    try:
        yield
    except PipelineError as exc:
        raise exc.prefixed(prefix) from None


def _mapping(data: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise PipelineError(f"{what} must be a mapping, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise PipelineError(f"unknown key {unknown[0]!r} in {what}; valid keys are {sorted(allowed)}").prefixed(
            unknown[0]
        )
    return dict(data)


def _text(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise PipelineError("is required", field=key)
        return None
    if not isinstance(value, str):
        raise PipelineError(f"must be a string, got {type(value).__name__} {value!r} (quote it)", field=key)
    return value


def _sequence(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise PipelineError(f"must be a list, got {type(value).__name__}", field=key)
    return value


def _parse_parameter(data: Any) -> ParameterDescriptor:
    raw = _mapping(data, _PARAMETER_KEYS, "a parameter")
    choices = _sequence(raw, "choices")
    return ParameterDescriptor(
        name=_text(raw, "name", required=True) or "",
        type=_text(raw, "type", required=True),  # type: ignore[arg-type]  # checked by the constructor
        required=raw.get("required", False),
        default=raw.get("default"),
        choices=tuple(choices),
        description=_text(raw, "description") or "",
    )


def _parse_stage(data: Any) -> StageDescriptor:
    raw = _mapping(data, _STAGE_KEYS, "a stage")
    params: list[ParameterDescriptor] = []
    for j, item in enumerate(_sequence(raw, "parameters")):
        with _field(f"parameters[{j}]"):
            params.append(_parse_parameter(item))
    retry = RetryPolicy()
    if raw.get("retry") is not None:
        with _field("retry"):
            retry = RetryPolicy(**_mapping(raw["retry"], _RETRY_KEYS, "retry"))
    return StageDescriptor(
        id=_text(raw, "id", required=True) or "",
        kind=_text(raw, "kind", required=True),  # type: ignore[arg-type]  # checked by the constructor
        name=_text(raw, "name") or "",
        notebook=_text(raw, "notebook"),
        dashboard=_text(raw, "dashboard"),
        worker_group=_text(raw, "worker_group"),
        parameters=tuple(params),
        depends_on=tuple(_sequence(raw, "depends_on")),
        timeout_s=raw.get("timeout_s"),
        retry=retry,
        description=_text(raw, "description") or "",
    )


def pipeline_fields(data: Any) -> dict[str, Any]:
    """The :class:`~medimg_kernel.pipeline.descriptor.PipelineDescriptor` arguments of a parsed descriptor.

    Parameters
    ----------
    data
        The parsed YAML (or JSON) of a whole descriptor.

    Returns
    -------
    dict
        ``id``, ``stages`` (built :class:`~medimg_kernel.pipeline.stages.StageDescriptor`),
        ``name``, ``version`` and ``description``, for the descriptor's constructor.

    Raises
    ------
    PipelineError
        Unknown keys or wrong types; ``field`` says where (``stages[1].parameters[0].default``).
    """
    raw = _mapping(data, _PIPELINE_KEYS, "the pipeline descriptor")
    stages: list[StageDescriptor] = []
    for i, item in enumerate(_sequence(raw, "stages")):
        with _field(f"stages[{i}]"):
            stages.append(_parse_stage(item))
    version = raw.get("version", "0")
    if not isinstance(version, str):
        raise PipelineError(f"must be a string, got {version!r} (quote it: version: '1.0')", field="version")
    return dict(
        id=_text(raw, "id", required=True) or "",
        stages=tuple(stages),
        name=_text(raw, "name") or "",
        version=version,
        description=_text(raw, "description") or "",
    )
