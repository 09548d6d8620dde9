"""Stages of a pipeline: their kind, retry policy and descriptor, valid once constructed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from ..errors import PipelineError
from .parameters import ParameterDescriptor, is_identifier

#: Timeout of an auto stage that does not set ``timeout_s``, in seconds.
DEFAULT_TIMEOUT_S = 3600.0
#: Worker group (Celery queue) of an auto stage that does not set ``worker_group``.
DEFAULT_WORKER_GROUP = "default"


class StageKind(StrEnum):
    """``auto``: a notebook a worker runs; ``manual``: a person decides in a dashboard."""

    AUTO = "auto"
    MANUAL = "manual"


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
