"""The dependency locks by room (scripts/lock.py): in step with pyproject.toml, the installed environment
and environment.yml; every third-party import of the packages is locked in its room; no CUDA build.

Pure and fast: reads the installed distributions' metadata and the source (grimp), no network. Each
check is also shown to fail on a broken copy (tmp_path), so it cannot pass vacuously.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import shutil
import sys
from pathlib import Path

import grimp
import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("kernel", "hub", "federated", "bench", "test")
FIRST_PARTY = {"medimg_kernel", "medimg_voila", "medimg_hub", "medimg_federated"}


def _load_lock_script():
    spec = importlib.util.spec_from_file_location("medimg_lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _load_lock_script()


def locked(path: Path) -> set[str]:
    """Canonical distribution names pinned in a lock file."""
    return {canonicalize_name(line.split("==")[0]) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def cuda_pins(path: Path) -> list[str]:
    return sorted(n for n in locked(path) if n.startswith("nvidia-") or n in {"triton", "pytorch-triton"})


def third_party_imports(graph: grimp.ImportGraph, packages: set[str]) -> set[str]:
    """Top-level third-party modules imported directly by any module of ``packages``."""
    found = set()
    for module in graph.modules:
        if module.split(".")[0] not in packages:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                found.add(top)
    return found


def unlocked(imports: set[str], names: set[str]) -> dict[str, list[str]]:
    """{import name: its distributions} for imports that no distribution in ``names`` provides."""
    provided = _packages_distributions()
    missing = {}
    for name in sorted(imports):
        dists = [canonicalize_name(d) for d in provided.get(name, [])]
        if not dists or not set(dists) & names:
            missing[name] = dists
    return missing


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*sorted(FIRST_PARTY), include_external_packages=True, cache_dir=None)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The generated files and their source, copied: a sandbox for breaking them."""
    for name in ("pyproject.toml", "requirements.lock", "environment.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = lock.main(["--check", "--root", str(root)])
    return rc, capsys.readouterr().err


# --- the locks are what scripts/lock.py generates ------------------------------------------------

def test_lock_check_passes(capsys):
    rc, err = check(ROOT, capsys)
    assert rc == 0, err


def test_check_names_a_removed_line(copy, capsys):
    kernel = copy / "requirements" / "kernel.lock"
    kernel.write_text("".join(l for l in kernel.read_text().splitlines(True) if not l.startswith("monai==")))
    rc, err = check(copy, capsys)
    assert rc == 1
    assert "requirements/kernel.lock: missing monai==1.6.1" in err


def test_check_names_a_package_nothing_needs(copy, capsys):
    union = copy / "requirements.lock"
    union.write_text(union.read_text() + "zz-nothing-needs-this==1.0\n")
    rc, err = check(copy, capsys)
    assert rc == 1
    assert "requirements.lock: not needed zz-nothing-needs-this==1.0" in err


def test_check_sees_pyproject_change(copy, capsys):
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('kernel = [\n', 'kernel = [\n    "simpleitk==2.5.7",\n', 1))
    rc, err = check(copy, capsys)
    assert rc == 1
    assert "requirements/kernel.lock: missing simpleitk==2.5.7" in err


def test_locks_are_sorted_as_before():
    for path in [ROOT / "requirements.lock", *sorted((ROOT / "requirements").glob("*.lock"))]:
        names = [l.split("==")[0] for l in path.read_text().splitlines() if l and not l.startswith("#")]
        assert names == sorted(names, key=str.lower), path


def test_union_is_every_room():
    rooms = set().union(*(locked(ROOT / "requirements" / f"{room}.lock") for room in ROOMS))
    assert locked(ROOT / "requirements.lock") == rooms


# --- environment.yml ---------------------------------------------------------------------------

def test_environment_yml_is_generated():
    assert (ROOT / "environment.yml").read_text() == lock.render(ROOT)["environment.yml"]


def test_environment_yml_edit_is_drift(copy, capsys):
    env = copy / "environment.yml"
    env.write_text(env.read_text().replace("      - anywidget==0.11.0\n", ""))
    assert env.read_text() != lock.render(copy)["environment.yml"]
    rc, err = check(copy, capsys)
    assert rc == 1 and "+      - anywidget==0.11.0" in err


# --- every import is locked in its room ---------------------------------------------------------

def test_kernel_side_imports_are_in_kernel_lock(graph):
    imports = third_party_imports(graph, {"medimg_kernel", "medimg_voila"})
    assert {"pydicom", "torch", "monai", "ipywidgets", "voila"} <= imports  # the scan sees them
    assert unlocked(imports, locked(ROOT / "requirements" / "kernel.lock")) == {}


def test_hub_imports_are_in_hub_and_federated_locks(graph):
    imports = third_party_imports(graph, {"medimg_hub"})
    assert {"celery", "sqlalchemy", "alembic", "ldapauthenticator"} <= imports
    names = locked(ROOT / "requirements" / "hub.lock") | locked(ROOT / "requirements" / "federated.lock")
    assert unlocked(imports, names) == {}


def test_the_flower_apps_imports_are_in_federated_lock(graph):
    imports = third_party_imports(graph, {"medimg_federated"})
    assert {"flwr", "numpy"} <= imports
    assert unlocked(imports, locked(ROOT / "requirements" / "federated.lock")) == {}


def test_an_unlocked_import_is_reported(graph):
    names = locked(ROOT / "requirements" / "kernel.lock") - {"monai"}
    imports = third_party_imports(graph, {"medimg_kernel"})
    assert unlocked(imports, names) == {"monai": ["monai"]}


# --- never a CUDA build -------------------------------------------------------------------------

def test_no_cuda_packages_in_any_lock():
    for path in [ROOT / "requirements.lock", *sorted((ROOT / "requirements").glob("*.lock"))]:
        assert cuda_pins(path) == [], path
    assert "torch" in locked(ROOT / "requirements" / "kernel.lock")


def test_cuda_pins_are_seen(copy):
    kernel = copy / "requirements" / "kernel.lock"
    kernel.write_text(kernel.read_text() + "nvidia-cublas-cu12==12.9.1.4\ntriton==3.5.0\n")
    assert cuda_pins(kernel) == ["nvidia-cublas-cu12", "triton"]


def test_lock_refuses_a_cuda_requirement(copy, capsys):
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"flwr==1.41.0", ', '"flwr==1.41.0", "nvidia-cublas-cu12", ', 1))
    rc, err = check(copy, capsys)
    assert rc == 2 and "nvidia-cublas-cu12" in err and "CUDA" in err
