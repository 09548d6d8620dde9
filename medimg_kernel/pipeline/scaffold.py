"""A new pipeline, ready to run: ``medimg pipelines new NAME`` (or :func:`scaffold_pipeline` from a notebook).

Writes ``<root>/<id>/``: ``pipeline.yaml`` (one auto stage on a series, then a manual review
stage), ``run.ipynb`` (its ``parameters`` cell, the platform's context, the series read as a
volume, outputs recorded), and ``test_pipeline.py`` (the descriptor loads and agrees with the
notebook; the notebook runs under papermill on a synthetic series). The descriptor is loaded
before anything is left on disk: a scaffold that would not load is not written.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from ..errors import PipelineError
from .loading import DESCRIPTOR_FILE, load_pipeline
from .parameters import is_identifier

#: The stage notebook the scaffold writes.
NOTEBOOK = "run.ipynb"

_DESCRIPTOR = """\
# Written by `medimg pipelines new {id}`. Stages run in order; a parameter declared here must be
# set in the stage notebook's `parameters` cell (checked when the pipeline loads).
id: {id}
name: {name}
version: "0.1"
description: {description}
stages:
  - id: run
    name: {stage_name}
    kind: auto
    notebook: {notebook}
    worker_group: {worker_group}
    timeout_s: 1800
    retry: {{max_attempts: 2, backoff_s: 30, backoff_factor: 2, max_backoff_s: 600}}
    parameters:
      - name: study_instance_uid
        type: study_uid
        required: true
        description: The study of the series.
      - name: series_instance_uid
        type: series_uid
        required: true
        description: The series the stage reads.
      - name: threshold_hu
        type: float
        default: 100.0
        description: An example parameter (Hounsfield units); replace it with yours.
  - id: review
    name: Check the result
    kind: manual
    dashboard: review
    depends_on: [run]
    parameters:
      - name: study_instance_uid
        type: study_uid
        required: true
        description: The study under review.
      - name: series_instance_uid
        type: series_uid
        required: true
        description: The series under review.
"""

_TEST = '''\
"""{name}: the descriptor loads, and its stage notebook runs under papermill on a synthetic series
(python -m pytest {folder}/test_pipeline.py)."""

from pathlib import Path

import papermill as pm

from medimg_kernel.pipeline import load_pipeline

HERE = Path(__file__).parent


def test_the_descriptor_loads_and_matches_its_notebook():
    pipeline = load_pipeline(HERE)
    assert pipeline.id == "{id}" and [s.id for s in pipeline.stages] == ["run", "review"]


def test_the_notebook_runs_on_a_synthetic_series(tmp_path):
    from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
    from medimg_kernel.volume import Volume
    import numpy as np

    volume = Volume(np.full((4, 16, 16), 150, np.int16), (2.0, 1.0, 1.0))
    series = ct_series_from_volume(volume, SyntheticPatient("SYN-1", "PHANTOM^TEST", "1.2.826.0.1.3680043.8.498.1"))
    folder = tmp_path / "dicom"
    folder.mkdir()
    for i, ds in enumerate(series):
        ds.save_as(folder / f"{{i}}.dcm", enforce_file_format=True)
    pm.execute_notebook(str(HERE / "{notebook}"), str(tmp_path / "out.ipynb"), kernel_name="python3", parameters={{
        "study_instance_uid": str(series[0].StudyInstanceUID), "series_instance_uid": str(series[0].SeriesInstanceUID),
        "dicom_folder": str(folder)}})
'''


def _cell(kind: str, source: str, tags: list[str] | None = None) -> dict[str, object]:
    cell: dict[str, object] = {"cell_type": kind, "id": uuid.uuid4().hex[:8],
                               "metadata": {"tags": tags} if tags else {}, "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _notebook(name: str) -> dict[str, object]:
    return {
        "cells": [
            _cell("markdown", f"# {name}: the pipeline's stage\n\nRun by the platform with papermill (the "
                              "parameters below are set for each job); run by hand, set them and "
                              "`MEDIMG_DICOMWEB_URL`, or `dicom_folder` for files on disk."),
            _cell("code", 'study_instance_uid = ""\nseries_instance_uid = ""\nthreshold_hu = 100.0\n'
                          'dicom_folder = ""  # tests and offline runs: a folder of DICOM files instead of the PACS\n'
                          "medimg_job = None  # injected by the platform: the job's context file", ["parameters"]),
            _cell("code", "import numpy as np\n\nimport medimg_kernel as mk\n"
                          "from medimg_kernel.stage import record_outputs, stage_context"),
            _cell("code", "context = stage_context(medimg_job) if medimg_job else None\n"
                          "client = context.connect() if context else (mk.DICOMfolderClient(dicom_folder) if dicom_folder "
                          "else mk.connect())\n"
                          "volume = mk.read_series(client, study_instance_uid, series_instance_uid)\n"
                          "volume.shape, volume.spacing"),
            _cell("code", "# Your method here: e.g. the voxels above the threshold, in mL (spacing is in mm)\n"
                          "mask = volume.array > threshold_hu\n"
                          "volume_ml = float(mask.sum() * np.prod(volume.spacing) / 1000)\nvolume_ml"),
            _cell("code", "if context:\n    record_outputs(context, source_series_instance_uid=series_instance_uid,\n"
                          "                   metrics={\"volume_ml\": volume_ml})"),
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def scaffold_pipeline(root: str | Path, pipeline_id: str, *, name: str | None = None,
                      worker_group: str = "default") -> Path:
    """Write a new pipeline ``<root>/<pipeline_id>/`` (see the module); returns its folder.

    Raises
    ------
    PipelineError
        ``pipeline_id`` is not a valid id (a-z, 0-9, ``-``, ``_``; 1-64) or the folder exists.
    """
    if not is_identifier(pipeline_id, slug=True):
        raise PipelineError(f"{pipeline_id!r} is not a valid pipeline id (a-z, 0-9, '-', '_'; 1-64)", field="id")
    folder = Path(root) / pipeline_id
    if folder.exists():
        raise PipelineError(f"{folder} exists already: choose another id or remove it", field="id")
    title = name or pipeline_id.replace("-", " ").replace("_", " ").capitalize()
    folder.mkdir(parents=True)
    try:
        (folder / DESCRIPTOR_FILE).write_text(_DESCRIPTOR.format(
            id=pipeline_id, name=json.dumps(title), stage_name=json.dumps(f"Run {title}"), notebook=NOTEBOOK,
            description=json.dumps(f"{title} on one series, then a person checks the result."),
            worker_group=worker_group))
        (folder / NOTEBOOK).write_text(json.dumps(_notebook(title), indent=1) + "\n")
        (folder / "test_pipeline.py").write_text(_TEST.format(id=pipeline_id, name=title, notebook=NOTEBOOK,
                                                              folder=folder.as_posix()))
        load_pipeline(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


__all__ = ["NOTEBOOK", "scaffold_pipeline"]
