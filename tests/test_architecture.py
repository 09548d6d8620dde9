"""The architecture as contracts: import-linter's contracts in pyproject.toml hold, and they bite.

The contracts (``[tool.importlinter]``): users' kernels (``medimg_kernel``) and the Flower app
never import the hub side; the hub side is layered by capability; no import cycles. `make test`
runs ``lint-imports`` before pytest; these tests also show that a forbidden import breaks it, and
check what import-linter cannot see: notebooks and dashboards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports not found: run scripts/bootstrap.sh (import-linter is in requirements.lock)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _python_sources(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.js", "*.css", "*.ipynb"))


def test_the_contracts_hold() -> None:
    result = _lint(REPO, [REPO, REPO / "hub", REPO / "federated"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("medimg_kernel/architecture_probe.py", "import medimg_hub.settings\n", "Trust boundary"),
    ("hub/medimg_hub/access/architecture_probe.py", "import medimg_hub.review.api\n", "layers"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    _python_sources(REPO / "medimg_kernel", tmp_path / "medimg_kernel")
    _python_sources(REPO / "hub" / "medimg_hub", tmp_path / "hub" / "medimg_hub")
    if (REPO / "federated").is_dir():
        _python_sources(REPO / "federated", tmp_path / "federated")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint(tmp_path, [tmp_path, tmp_path / "hub", tmp_path / "federated"]).returncode == 0
    (tmp_path / module).write_text(line)
    result = _lint(tmp_path, [tmp_path, tmp_path / "hub", tmp_path / "federated"])
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and "architecture_probe" in broken, result.stdout[-3000:]


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def test_notebooks_and_dashboards_never_import_the_hub_side() -> None:
    notebooks = [p for folder in ("notebooks", "dashboards", "tests/fixtures") for p in (REPO / folder).rglob("*.ipynb")]
    assert len(notebooks) >= 5
    offenders = [str(p.relative_to(REPO)) for p in notebooks if any("medimg_hub" in code for code in _code_cells(p))]
    assert not offenders, f"these run in users' kernels and import the hub side: {offenders}"
