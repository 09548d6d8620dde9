"""The pipeline descriptor (stages, dependencies without cycles) and the check of a run's parameters.

A parameter shared by several stages (e.g. ``series_instance_uid``) is one value for
the whole run, so its declarations must agree; a run's parameters are a flat mapping,
checked and coerced by :func:`validate_parameters`, which raises
:class:`~medimg_kernel.errors.ParameterError` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParameterError, PipelineError
from .parameters import ParameterDescriptor, is_identifier
from .parameters_cell import notebook_parameters
from .schema import pipeline_fields
from .stages import StageDescriptor


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
        """Each auto stage's notebook exists and its ``parameters`` cell sets every parameter the stage declares."""
        for i, stage in enumerate(self.stages):
            if stage.notebook is None:
                continue
            if not (root / stage.notebook).is_file():
                raise PipelineError(
                    f"notebook {stage.notebook!r} not found in {root}", field=f"stages[{i}].notebook"
                )
            try:
                names = notebook_parameters(root / stage.notebook)
            except PipelineError as exc:
                raise PipelineError(exc.reason, field=f"stages[{i}].notebook") from None
            for j, param in enumerate(stage.parameters):
                if param.name not in names:
                    raise PipelineError(
                        f"parameter {param.name!r} is not set in {stage.notebook}'s parameters cell (it sets "
                        f"{', '.join(sorted(names)) or 'nothing'}): add it there or remove it here",
                        field=f"stages[{i}].parameters[{j}].name",
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
            return PipelineDescriptor(**pipeline_fields(data), root=root)
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
