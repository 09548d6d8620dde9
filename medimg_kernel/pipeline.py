"""Pipeline descriptors: what a pipeline is made of, validated once constructed.

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
offending field (``stages[1].parameters[0].default``). Run parameters are checked
and coerced by :func:`validate_parameters`, which raises
:class:`~medimg_kernel.errors.ParameterError` naming the parameter.

A parameter shared by several stages (e.g. ``series_instance_uid``) is one value for
the whole run, so its declarations must agree; a run's parameters are a flat mapping.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ParameterError, PipelineError

log = logging.getLogger(__name__)

#: The descriptor's file name inside a pipeline folder.
DESCRIPTOR_FILE = "pipeline.yaml"
#: Timeout of an auto stage that does not set ``timeout_s``, in seconds.
DEFAULT_TIMEOUT_S = 3600.0
#: Worker group (Celery queue) of an auto stage that does not set ``worker_group``.
DEFAULT_WORKER_GROUP = "default"

__all__ = [
    "DEFAULT_TIMEOUT_S", "DEFAULT_WORKER_GROUP", "DESCRIPTOR_FILE", "ParameterDescriptor",
    "ParameterType", "PipelineDescriptor", "RetryPolicy", "StageDescriptor", "StageKind",
    "discover_pipelines", "load_pipeline", "validate_parameters",
]


class StageKind(StrEnum):
    """``auto``: a notebook a worker runs; ``manual``: a person decides in a dashboard."""

    AUTO = "auto"
    MANUAL = "manual"


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


@contextmanager
def _field(prefix: str) -> Iterator[None]:
    """Prefix the ``field`` of any :class:`PipelineError` raised inside the block."""
    try:
        yield
    except PipelineError as exc:
        raise exc.prefixed(prefix) from None


@dataclass(frozen=True)
class RetryPolicy:
    """How often an auto stage is attempted, and how long to wait between attempts.

    Attributes
    ----------
    max_attempts
        Attempts in all (1 = no retry).
    backoff_s
        Seconds before the second attempt.
    backoff_factor
        Each further wait is this many times longer.
    max_backoff_s
        Upper bound of a wait, in seconds.
    """

    max_attempts: int = 1
    backoff_s: float = 30.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 3600.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise PipelineError(f"must be an integer >= 1, got {self.max_attempts!r}", field="max_attempts")
        for name, low in (("backoff_s", 0.0), ("backoff_factor", 1.0), ("max_backoff_s", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
                raise PipelineError(f"must be a number >= {low:g}, got {value!r}", field=name)
            object.__setattr__(self, name, float(value))
        if self.max_backoff_s < self.backoff_s:
            raise PipelineError("must not be smaller than backoff_s", field="max_backoff_s")

    def delay_s(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures before the next attempt."""
        exponent = max(failed_attempts - 1, 0)
        return float(min(self.backoff_s * self.backoff_factor**exponent, self.max_backoff_s))


@dataclass(frozen=True)
class StageDescriptor:
    """One stage of a pipeline; valid once constructed.

    Attributes
    ----------
    id
        Stage id, unique in its pipeline (lower case, digits, ``-`` and ``_``).
    name
        Human-readable name (defaults to the id).
    kind
        :class:`StageKind`.
    notebook
        Auto stages: the notebook, relative to the pipeline folder (POSIX path, ``.ipynb``).
    dashboard
        Manual stages: the dashboard that presents the job for a decision.
    worker_group
        Auto stages: the worker group (Celery queue) that runs the notebook.
    parameters
        The parameters the stage's notebook or dashboard takes.
    depends_on
        Ids of the stages that must have succeeded (or been accepted/corrected) first.
    timeout_s
        Auto stages: seconds an attempt may run; ``None`` for manual stages.
    retry
        Auto stages: the :class:`RetryPolicy`; manual stages always have one attempt.
    """

    id: str
    kind: StageKind
    name: str = ""
    notebook: str | None = None
    dashboard: str | None = None
    worker_group: str | None = None
    parameters: tuple[ParameterDescriptor, ...] = ()
    depends_on: tuple[str, ...] = ()
    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    description: str = ""

    def __post_init__(self) -> None:
        if not is_identifier(self.id, slug=True):
            raise PipelineError(f"{self.id!r} is not a valid id (a-z, 0-9, '-', '_'; 1-64)", field="id")
        try:
            object.__setattr__(self, "kind", StageKind(self.kind))
        except ValueError:
            raise PipelineError(
                f"unknown stage kind {self.kind!r}; use one of {[k.value for k in StageKind]}", field="kind"
            ) from None
        object.__setattr__(self, "name", self.name or self.id)
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "depends_on", tuple(self.depends_on))
        if self.kind is StageKind.AUTO:
            self._check_auto()
        else:
            self._check_manual()
        seen: set[str] = set()
        for i, param in enumerate(self.parameters):
            if param.name in seen:
                raise PipelineError(f"parameter {param.name!r} is declared twice", field=f"parameters[{i}].name")
            seen.add(param.name)
        for i, dep in enumerate(self.depends_on):
            if not isinstance(dep, str):
                raise PipelineError(f"must be a stage id, got {dep!r}", field=f"depends_on[{i}]")

    def _check_auto(self) -> None:
        for name in ("dashboard",):
            if getattr(self, name) is not None:
                raise PipelineError("only manual stages have a dashboard", field=name)
        if not self.notebook:
            raise PipelineError("an auto stage needs a notebook (e.g. 'segment.ipynb')", field="notebook")
        path = PurePosixPath(self.notebook)
        if path.is_absolute() or ".." in path.parts or path.suffix != ".ipynb":
            raise PipelineError(
                f"{self.notebook!r} must be a .ipynb path relative to the pipeline folder", field="notebook"
            )
        group = self.worker_group if self.worker_group is not None else DEFAULT_WORKER_GROUP
        if not is_identifier(group, slug=True):
            raise PipelineError(f"{group!r} is not a valid worker group (queue) name", field="worker_group")
        object.__setattr__(self, "worker_group", group)
        timeout = DEFAULT_TIMEOUT_S if self.timeout_s is None else self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise PipelineError(f"must be a number of seconds > 0, got {timeout!r}", field="timeout_s")
        object.__setattr__(self, "timeout_s", float(timeout))

    def _check_manual(self) -> None:
        for name in ("notebook", "worker_group", "timeout_s"):
            if getattr(self, name) is not None:
                raise PipelineError(f"a manual stage has no {name} (a person decides it)", field=name)
        if self.retry != RetryPolicy():
            raise PipelineError("a manual stage has no retry policy", field="retry")
        if not self.dashboard or not isinstance(self.dashboard, str):
            raise PipelineError("a manual stage needs the dashboard that presents it", field="dashboard")

    def parameter_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of a run's validated ``values`` that this stage takes."""
        return {p.name: values[p.name] for p in self.parameters if p.name in values}


@dataclass(frozen=True)
class PipelineDescriptor:
    """A pipeline: stages and their dependencies; valid once constructed.

    Attributes
    ----------
    id, name, version, description
        Identity; ``id`` equals the folder name when loaded from a file.
    stages
        The stages in declaration order (see :meth:`topological_order`).
    root
        The pipeline folder; when given, every auto stage's notebook must exist in it.
    """

    id: str
    stages: tuple[StageDescriptor, ...]
    name: str = ""
    version: str = "0"
    description: str = ""
    root: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not is_identifier(self.id, slug=True):
            raise PipelineError(f"{self.id!r} is not a valid id (a-z, 0-9, '-', '_'; 1-64)", field="id")
        if not isinstance(self.version, str) or not self.version:
            raise PipelineError(f"must be a non-empty string (quote it: '1.0'), got {self.version!r}", field="version")
        object.__setattr__(self, "name", self.name or self.id)
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise PipelineError("a pipeline needs at least one stage", field="stages")
        self._check_ids_and_dependencies()
        self._check_shared_parameters()
        if self.root is not None:
            self._check_notebooks(Path(self.root))

    def _check_ids_and_dependencies(self) -> None:
        index: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            if stage.id in index:
                raise PipelineError(f"stage id {stage.id!r} is used twice", field=f"stages[{i}].id")
            index[stage.id] = i
        for i, stage in enumerate(self.stages):
            for j, dep in enumerate(stage.depends_on):
                if dep not in index:
                    raise PipelineError(
                        f"unknown stage {dep!r}; stages are {sorted(index)}", field=f"stages[{i}].depends_on[{j}]"
                    )
        cycle = _find_cycle({s.id: s.depends_on for s in self.stages})
        if cycle:
            raise PipelineError(
                f"dependency cycle {' -> '.join(cycle)}", field=f"stages[{index[cycle[0]]}].depends_on"
            )

    def _check_shared_parameters(self) -> None:
        first: dict[str, tuple[str, ParameterDescriptor]] = {}
        for i, stage in enumerate(self.stages):
            for j, param in enumerate(stage.parameters):
                if param.name not in first:
                    first[param.name] = (stage.id, param)
                elif not first[param.name][1].same_contract(param):
                    raise PipelineError(
                        f"parameter {param.name!r} is declared differently in stage {first[param.name][0]!r}; "
                        "a parameter shared by stages must have the same type, required, default and choices",
                        field=f"stages[{i}].parameters[{j}]",
                    )

    def _check_notebooks(self, root: Path) -> None:
        for i, stage in enumerate(self.stages):
            if stage.notebook is not None and not (root / stage.notebook).is_file():
                raise PipelineError(
                    f"notebook {stage.notebook!r} not found in {root}", field=f"stages[{i}].notebook"
                )

    @property
    def parameters(self) -> tuple[ParameterDescriptor, ...]:
        """Every parameter of the run (shared parameters once), in declaration order."""
        seen: dict[str, ParameterDescriptor] = {}
        for stage in self.stages:
            for param in stage.parameters:
                seen.setdefault(param.name, param)
        return tuple(seen.values())

    def stage(self, stage_id: str) -> StageDescriptor:
        """The stage with id ``stage_id`` (``KeyError`` if there is none)."""
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(f"pipeline {self.id!r} has no stage {stage_id!r}")

    def topological_order(self) -> tuple[StageDescriptor, ...]:
        """Stages ordered so that each comes after its dependencies (stable otherwise)."""
        done: set[str] = set()
        order: list[StageDescriptor] = []
        while len(order) < len(self.stages):
            for stage in self.stages:
                if stage.id not in done and set(stage.depends_on) <= done:
                    order.append(stage)
                    done.add(stage.id)
                    break
        return tuple(order)

    @classmethod
    def from_dict(cls, data: Any, *, root: Path | None = None, source: str = "") -> PipelineDescriptor:
        """Build a descriptor from parsed YAML/JSON, refusing unknown keys and wrong types."""
        try:
            return _parse_pipeline(data, root=root)
        except PipelineError as exc:
            exc.source = exc.source or source
            raise


def _find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A dependency cycle as ``[a, b, ..., a]``, or ``[]`` when the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return []


def load_pipeline(path: str | Path) -> PipelineDescriptor:
    """Read and validate a pipeline descriptor.

    Parameters
    ----------
    path
        The pipeline folder or its ``pipeline.yaml``.

    Raises
    ------
    PipelineError
        The file is missing, is not YAML, or the descriptor is invalid; ``field`` says where.
    """
    file = Path(path)
    if file.is_dir():
        file = file / DESCRIPTOR_FILE
    data = _read_yaml(file)
    descriptor = PipelineDescriptor.from_dict(data, root=file.parent, source=str(file))
    if descriptor.id != file.parent.name:
        raise PipelineError(
            f"id {descriptor.id!r} must equal the folder name {file.parent.name!r}", field="id", source=file
        )
    return descriptor


def discover_pipelines(root: str | Path, *, strict: bool = True) -> dict[str, PipelineDescriptor]:
    """Every pipeline under ``root`` (each sub-folder holding a ``pipeline.yaml``), by id.

    Parameters
    ----------
    root
        Usually ``notebooks/pipelines``; a missing folder holds no pipelines.
    strict
        Raise on the first invalid descriptor (default); when false, log it and skip it.
    """
    found: dict[str, PipelineDescriptor] = {}
    base = Path(root)
    if not base.is_dir():
        return found
    for file in sorted(base.glob(f"*/{DESCRIPTOR_FILE}")):
        try:
            descriptor = load_pipeline(file)
        except PipelineError as exc:
            if strict:
                raise
            log.warning("skipping invalid pipeline: %s", exc)
            continue
        found[descriptor.id] = descriptor
    return found


def validate_parameters(
    target: PipelineDescriptor | StageDescriptor, raw: Mapping[str, Any]
) -> dict[str, Any]:
    """Check and coerce the parameters of a run before anything is queued.

    Parameters
    ----------
    target
        A pipeline (a run's flat parameters) or one stage.
    raw
        Values by name; strings are coerced as a command line gives them
        (``"3"`` → 3, ``"true"`` → True). ``None`` counts as not given.

    Returns
    -------
    dict
        Coerced values, with defaults filled in for parameters not given.

    Raises
    ------
    ParameterError
        An unknown parameter, a missing required one, or an invalid value; names it.
    """
    if not isinstance(raw, Mapping):
        raise ParameterError("", f"parameters must be a mapping of name to value, got {type(raw).__name__}", field="parameters")
    declared = {p.name: p for p in target.parameters}
    unknown = sorted(str(name) for name in raw if name not in declared)
    if unknown:
        what = f"pipeline {target.id!r}" if isinstance(target, PipelineDescriptor) else f"stage {target.id!r}"
        raise ParameterError(
            unknown[0], f"unknown parameter(s) {unknown}; {what} takes {sorted(declared) or 'none'}"
        )
    values: dict[str, Any] = {}
    for name, param in declared.items():
        given = raw.get(name)
        if given is not None:
            values[name] = param.coerce(given)
        elif param.required:
            raise ParameterError(name, f"parameter {name!r} is required ({param.type.value})")
        elif param.default is not None:
            values[name] = param.default
    return values


# --- reading descriptor files ------------------------------------------------------------------

_PIPELINE_KEYS = {"id", "name", "version", "description", "stages"}
_STAGE_KEYS = {
    "id", "name", "kind", "notebook", "dashboard", "worker_group", "parameters", "depends_on",
    "timeout_s", "retry", "description",
}
_PARAMETER_KEYS = {"name", "type", "required", "default", "choices", "description"}
_RETRY_KEYS = {"max_attempts", "backoff_s", "backoff_factor", "max_backoff_s"}


def _read_yaml(file: Path) -> Any:
    """Parse a YAML file safely, refusing duplicate keys (PyYAML keeps the last one silently)."""
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(key_node) for key_node, _ in node.value]
        dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dupes:
            line = node.start_mark.line + 1
            raise PipelineError(f"duplicate key(s) {dupes} in the mapping at line {line}", source=file)
        return loader.construct_mapping(node)

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    if not file.is_file():
        raise PipelineError(f"no descriptor: {file} does not exist", source=file)
    try:
        return yaml.load(file.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        raise PipelineError(f"not valid YAML: {exc}", source=file) from None


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


def _parse_pipeline(data: Any, *, root: Path | None) -> PipelineDescriptor:
    raw = _mapping(data, _PIPELINE_KEYS, "the pipeline descriptor")
    stages: list[StageDescriptor] = []
    for i, item in enumerate(_sequence(raw, "stages")):
        with _field(f"stages[{i}]"):
            stages.append(_parse_stage(item))
    version = raw.get("version", "0")
    if not isinstance(version, str):
        raise PipelineError(f"must be a string, got {version!r} (quote it: version: '1.0')", field="version")
    return PipelineDescriptor(
        id=_text(raw, "id", required=True) or "",
        stages=tuple(stages),
        name=_text(raw, "name") or "",
        version=version,
        description=_text(raw, "description") or "",
        root=root,
    )
