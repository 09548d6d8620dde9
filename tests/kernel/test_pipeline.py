"""Pipeline descriptors: loading, refusals naming the field, parameter coercion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from medimg_kernel.errors import MedImgError, ParameterError, PipelineError
from medimg_kernel.pipeline import (
    ParameterDescriptor,
    ParameterType,
    PipelineDescriptor,
    RetryPolicy,
    StageDescriptor,
    StageKind,
    discover_pipelines,
    load_pipeline,
    validate_parameters,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "notebooks" / "pipelines" / "example-echo"
UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def example_data() -> dict:
    return yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())


@pytest.fixture
def write_pipeline(tmp_path):
    """``write_pipeline(data)`` writes ``data`` as ``<tmp>/<id>/pipeline.yaml`` beside echo.ipynb."""

    def write(data: dict | str, folder: str = "example-echo") -> Path:
        root = tmp_path / folder
        root.mkdir(exist_ok=True)
        shutil.copy(EXAMPLE / "echo.ipynb", root / "echo.ipynb")
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        (root / "pipeline.yaml").write_text(text)
        return root

    return write


def test_example_pipeline_loads():
    pipeline = load_pipeline(EXAMPLE)
    assert pipeline.id == "example-echo" and pipeline.version == "1.0"
    echo, review = pipeline.stages
    assert echo.kind is StageKind.AUTO and echo.notebook == "echo.ipynb" and echo.worker_group == "default"
    assert echo.timeout_s == 60.0 and echo.retry == RetryPolicy(2, 5.0, 2.0, 60.0)
    assert review.kind is StageKind.MANUAL and review.depends_on == ("echo",) and review.timeout_s is None
    assert [p.name for p in pipeline.parameters] == ["message", "repeat", "series_instance_uid"]
    assert load_pipeline(EXAMPLE / "pipeline.yaml") == pipeline


def test_discover_finds_the_example_and_skips_invalid_when_not_strict(tmp_path, write_pipeline, example_data):
    assert "example-echo" in discover_pipelines(REPO / "notebooks" / "pipelines")
    write_pipeline(example_data)
    example_data["id"] = "broken"
    example_data["stages"][0]["kind"] = "robot"
    write_pipeline(example_data, folder="broken")
    with pytest.raises(PipelineError, match="robot"):
        discover_pipelines(tmp_path)
    assert list(discover_pipelines(tmp_path, strict=False)) == ["example-echo"]
    assert discover_pipelines(tmp_path / "absent") == {}


def _mutations():
    def set_(path, value):
        def apply(d):
            target = d
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        return apply

    def drop_notebook(d):
        d["stages"][0]["notebook"] = "missing.ipynb"

    return [
        ("unknown kind", set_(["stages", 0, "kind"], "robot"), "stages[0].kind", "unknown stage kind 'robot'"),
        ("missing notebook", drop_notebook, "stages[0].notebook", "not found"),
        ("bad default type", set_(["stages", 0, "parameters", 1, "default"], "three"), "stages[0].parameters[1].default",
         "expected an integer"),
        ("unknown type", set_(["stages", 0, "parameters", 1, "type"], "integer"), "stages[0].parameters[1].type",
         "unknown parameter type"),
        ("default not in choices", set_(["stages", 0, "parameters", 0],
                                        {"name": "mode", "type": "enum", "choices": ["a", "b"], "default": "c"}),
         "stages[0].parameters[0].default", "not one of the choices"),
        ("choices on a non-enum", set_(["stages", 0, "parameters", 0, "choices"], ["x"]),
         "stages[0].parameters[0].choices", "only enum"),
        ("required with default", set_(["stages", 0, "parameters", 2, "default"], UID),
         "stages[0].parameters[2].default", "required parameter has no default"),
        ("unknown dependency", set_(["stages", 1, "depends_on"], ["nope"]), "stages[1].depends_on[0]",
         "unknown stage 'nope'"),
        ("cycle", set_(["stages", 0, "depends_on"], ["review"]), "stages[0].depends_on",
         "cycle echo -> review -> echo"),
        ("self dependency", set_(["stages", 0, "depends_on"], ["echo"]), "stages[0].depends_on", "cycle echo -> echo"),
        ("duplicate stage id", set_(["stages", 1, "id"], "echo"), "stages[1].id", "used twice"),
        ("duplicate parameter", set_(["stages", 0, "parameters", 1, "name"], "message"),
         "stages[0].parameters[1].name", "declared twice"),
        ("unknown key", set_(["stages", 0, "notbook"], "x.ipynb"), "stages[0].notbook", "unknown key 'notbook'"),
        ("notebook on manual", set_(["stages", 1, "notebook"], "echo.ipynb"), "stages[1].notebook",
         "manual stage has no notebook"),
        ("manual without dashboard", set_(["stages", 1, "dashboard"], None), "stages[1].dashboard", "needs the dashboard"),
        ("notebook escapes folder", set_(["stages", 0, "notebook"], "../x.ipynb"), "stages[0].notebook",
         "relative to the pipeline folder"),
        ("bad retry", set_(["stages", 0, "retry", "max_attempts"], 0), "stages[0].retry.max_attempts", ">= 1"),
        ("bad timeout", set_(["stages", 0, "timeout_s"], -1), "stages[0].timeout_s", "> 0"),
        ("conflicting shared parameter", set_(["stages", 1, "parameters", 0, "type"], "study_uid"),
         "stages[1].parameters[0]", "declared differently"),
        ("unquoted version", set_(["version"], 1.0), "version", "quote it"),
        ("id differs from folder", set_(["id"], "other"), "id", "must equal the folder name"),
        ("no stages", set_(["stages"], []), "stages", "at least one stage"),
    ]


@pytest.mark.parametrize(("mutate", "field", "message"), [m[1:] for m in _mutations()], ids=[m[0] for m in _mutations()])
def test_invalid_descriptors_are_refused_naming_the_field(write_pipeline, example_data, mutate, field, message):
    mutate(example_data)
    root = write_pipeline(example_data)
    with pytest.raises(PipelineError) as info:
        load_pipeline(root)
    assert info.value.field == field
    assert message in str(info.value)
    assert str(root / "pipeline.yaml") in str(info.value), "the message names the file"
    assert isinstance(info.value, ValueError) and isinstance(info.value, MedImgError)


def test_duplicate_yaml_keys_and_bad_yaml_are_refused(write_pipeline):
    root = write_pipeline("id: example-echo\nid: again\nstages: []\n")
    with pytest.raises(PipelineError, match=r"duplicate key\(s\) \['id'\]"):
        load_pipeline(root)
    root = write_pipeline("id: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_pipeline(root)
    with pytest.raises(PipelineError, match="does not exist"):
        load_pipeline(root / "nowhere")


def test_descriptors_built_in_code_are_validated():
    with pytest.raises(PipelineError) as info:
        ParameterDescriptor("n", ParameterType.INT, default=True)
    assert info.value.field == "default"
    with pytest.raises(PipelineError) as info:
        StageDescriptor("s", StageKind.AUTO)
    assert info.value.field == "notebook"
    stage = StageDescriptor("s", "auto", notebook="s.ipynb")
    assert stage.worker_group == "default" and stage.timeout_s == 3600.0 and stage.name == "s"
    with pytest.raises(PipelineError, match="not found") as info:
        PipelineDescriptor("p", (stage,), root=Path("/nonexistent"))
    assert info.value.field == "stages[0].notebook"


@pytest.mark.parametrize(
    ("ptype", "raw", "expected"),
    [
        ("int", "3", 3), ("int", " -7 ", -7), ("int", 4, 4),
        ("float", "2.5", 2.5), ("float", "1e-3", 0.001), ("float", 2, 2.0),
        ("bool", "true", True), ("bool", "False", False), ("bool", "yes", True), ("bool", "0", False), ("bool", 1, True),
        ("string", "text", "text"),
        ("series_uid", f" {UID} ", UID), ("study_uid", "0.1.2", "0.1.2"),
        ("model", "liver-unet@champion", "liver-unet@champion"), ("model", "models:/liver/3", "models:/liver/3"),
    ],
)
def test_values_are_coerced_as_from_a_command_line(ptype, raw, expected):
    param = ParameterDescriptor("x", ptype)
    value = param.coerce(raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("ptype", "raw", "message"),
    [
        ("int", "3.5", "expected an integer"), ("int", True, "expected an integer"),
        ("float", "nan", "finite"), ("float", "abc", "finite"),
        ("bool", "maybe", "expected a bool"), ("bool", 2, "expected a bool"),
        ("string", 5, "expected a string"),
        ("series_uid", "1.2.03", "not a DICOM UID"), ("series_uid", "1.2.abc", "not a DICOM UID"),
        ("study_uid", "1." + "2" * 70, "at most 64"), ("study_uid", "1..2", "not a DICOM UID"),
        ("model", "../etc/passwd", "not a model reference"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(ptype, raw, message):
    with pytest.raises(ParameterError, match=message) as info:
        ParameterDescriptor("x", ptype).coerce(raw)
    assert info.value.parameter == "x" and info.value.field == "parameters.x"


def test_validate_parameters_for_a_pipeline_and_a_stage():
    pipeline = load_pipeline(EXAMPLE)
    values = validate_parameters(pipeline, {"repeat": "3", "series_instance_uid": UID, "message": None})
    assert values == {"message": "hello", "repeat": 3, "series_instance_uid": UID}
    assert pipeline.stage("review").parameter_values(values) == {"series_instance_uid": UID}
    assert validate_parameters(pipeline.stage("review"), {"series_instance_uid": UID}) == {"series_instance_uid": UID}
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['colour'\]") as info:
        validate_parameters(pipeline, {"colour": "red", "series_instance_uid": UID})
    assert info.value.parameter == "colour"
    with pytest.raises(ParameterError, match="'series_instance_uid' is required") as info:
        validate_parameters(pipeline, {})
    assert info.value.parameter == "series_instance_uid"
    with pytest.raises(ParameterError, match="not a DICOM UID"):
        validate_parameters(pipeline, {"series_instance_uid": "not-a-uid"})
    with pytest.raises(ParameterError, match="unknown parameter"):
        validate_parameters(pipeline.stage("review"), {"repeat": 2, "series_instance_uid": UID})


def test_enum_parameters_and_topological_order():
    mode = ParameterDescriptor("mode", "enum", choices=("fast", "exact"), default="fast")
    a = StageDescriptor("a", "auto", notebook="a.ipynb", depends_on=("b",), parameters=(mode,))
    b = StageDescriptor("b", "auto", notebook="b.ipynb")
    pipeline = PipelineDescriptor("p", (a, b))
    assert [s.id for s in pipeline.topological_order()] == ["b", "a"]
    assert validate_parameters(pipeline, {"mode": "exact"}) == {"mode": "exact"}
    with pytest.raises(ParameterError, match=r"not one of the choices \['fast', 'exact'\]"):
        validate_parameters(pipeline, {"mode": "slow"})


def test_retry_policy_backoff():
    policy = RetryPolicy(max_attempts=4, backoff_s=10, backoff_factor=3, max_backoff_s=60)
    assert [policy.delay_s(n) for n in (1, 2, 3)] == [10.0, 30.0, 60.0]


def test_a_parameter_the_notebook_does_not_set_is_refused(write_pipeline, example_data):
    """The descriptor's parameters are checked against the stage notebook's ``parameters`` cell."""
    import json

    example_data["stages"][0]["parameters"].append({"name": "mesage", "type": "string", "default": "x"})
    with pytest.raises(PipelineError, match="'mesage' is not set in echo.ipynb's parameters cell "
                                            r"\(it sets message, repeat, series_instance_uid\)") as error:
        load_pipeline(write_pipeline(example_data))
    assert error.value.field == "stages[0].parameters[3].name"
    example_data["stages"][0]["parameters"].pop()
    root = write_pipeline(example_data)
    notebook = json.loads((root / "echo.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["metadata"]["tags"] = []
    (root / "echo.ipynb").write_text(json.dumps(notebook))
    with pytest.raises(PipelineError, match="has no cell tagged 'parameters'") as error:
        load_pipeline(root)
    assert error.value.field == "stages[0].notebook"
    cell["metadata"]["tags"], cell["source"] = ["parameters"], "message = 'hello\nrepeat = 1\n"
    (root / "echo.ipynb").write_text(json.dumps(notebook))
    with pytest.raises(PipelineError, match="parameters cell is not valid Python"):
        load_pipeline(root)


def test_a_scaffolded_pipeline_loads_and_its_own_test_passes(tmp_path):
    """``medimg pipelines new``: descriptor, stage notebook and test, valid as written; bad ids refused."""
    import subprocess
    import sys

    from medimg_kernel.pipeline.scaffold import scaffold_pipeline

    folder = scaffold_pipeline(tmp_path, "liver-volume", worker_group="segmentation")
    pipeline = load_pipeline(folder)
    assert [s.id for s in pipeline.stages] == ["run", "review"] and pipeline.stages[0].worker_group == "segmentation"
    assert {p.name for p in pipeline.stages[0].parameters} == {"study_instance_uid", "series_instance_uid",
                                                                "threshold_hu"}
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "test_pipeline.py")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout[-2000:] + ran.stderr[-2000:]
    with pytest.raises(PipelineError, match="exists already"):
        scaffold_pipeline(tmp_path, "liver-volume")
    with pytest.raises(PipelineError, match="not a valid pipeline id"):
        scaffold_pipeline(tmp_path, "Liver Volume")
    assert not (tmp_path / "Liver Volume").exists()
