"""Reading pipeline descriptors: loading one ``pipeline.yaml``, discovering all.

A pipeline lives in one folder, ``notebooks/pipelines/<id>/``: a ``pipeline.yaml``
descriptor (its format: :mod:`medimg_kernel.pipeline.schema`) and the stage notebooks
beside it. Refusals are :class:`~medimg_kernel.errors.PipelineError` whose ``field``
names the offending field (``stages[1].parameters[0].default``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .descriptor import PipelineDescriptor

log = logging.getLogger(__name__)

#: The descriptor's file name inside a pipeline folder.
DESCRIPTOR_FILE = "pipeline.yaml"


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
