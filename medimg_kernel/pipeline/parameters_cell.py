"""A stage notebook's ``parameters`` cell: the names papermill can set.

papermill injects a run's parameters after the cell tagged ``parameters``; a name the descriptor
declares but that cell does not assign would be injected into a notebook that never reads it (a
typo in ``pipeline.yaml`` runs silently with the notebook's default). This module reads the
names as papermill's own inspection does, with :mod:`ast`, without importing papermill (users'
kernels do not have it).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ..errors import PipelineError

#: The cell tag papermill looks for.
PARAMETERS_TAG = "parameters"


def notebook_parameters(path: str | Path) -> dict[str, str]:
    """Names assigned in the notebook's ``parameters`` cell, with their default's source text.

    Raises
    ------
    PipelineError
        The file is not a notebook, has no cell tagged ``parameters``, or that cell is not Python.
    """
    file = Path(path)
    try:
        notebook = json.loads(file.read_text(encoding="utf-8"))
        cells = notebook["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{file.name} is not a readable notebook: {exc}", field="notebook", source=file) from exc
    for cell in cells:
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in (cell.get("metadata", {}).get("tags") or []):
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            try:
                tree = ast.parse(text)
            except SyntaxError as exc:
                raise PipelineError(f"{file.name}: the parameters cell is not valid Python ({exc.msg}, line "
                                    f"{exc.lineno})", field="notebook", source=file) from exc
            found: dict[str, str] = {}
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = ast.get_source_segment(text, node.value) or ""  # type: ignore[union-attr]
            return found
    raise PipelineError(f"{file.name} has no cell tagged {PARAMETERS_TAG!r}: tag the cell that sets the stage's "
                        "parameters (papermill injects the run's values after it)", field="notebook", source=file)


__all__ = ["PARAMETERS_TAG", "notebook_parameters"]
