"""Fixtures of the federated tests.

Fixtures
--------
demo_sites (session)
    Three demo sites × 2 studies (CT + ground-truth SEG) written as files: ``(folder, [site names])``.
site_folders (session)
    ``{site: folder}``: one folder per site, holding only that site's files.
unlabelled_site (session)
    A folder with one site's CT series and no SEG (a site without finalised labels).
tracking_uri
    A fresh SQLite MLflow store under the test's tmp folder.
_in_tmp_cwd (autouse)
    Every test runs with the current folder set to its tmp folder.
run_config
    Run-config overrides for fast runs: the tiny network, 1 local epoch, the test's MLflow store
    and an alias of its own (``champion`` is never touched).

Every test that starts Flower processes stops them in ``finally`` (:meth:`Federation.down`).
The app's package ``medimg_federated`` must be importable: ``federated/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medimg_kernel.phantom.demo import generate_demo

try:
    from medimg_federated.task import TINY_MODEL
except ModuleNotFoundError as exc:  # the app's source root is federated/, not the repository root
    if exc.name != "medimg_federated":
        raise
    raise ImportError("the Flower app's package medimg_federated is not importable: put federated/ on "
                      "PYTHONPATH (e.g. PYTHONPATH=.:hub:federated python -m pytest tests/federated)") from exc


@pytest.fixture(scope="session")
def demo_sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("fl-demo")
    manifest = generate_demo(folder, n_sites=3, studies_per_site=2)
    return folder, sorted({s.site for s in manifest.studies})


@pytest.fixture(scope="session")
def site_folders(demo_sites: tuple[Path, list[str]]) -> dict[str, Path]:
    folder, sites = demo_sites
    return {site: folder / site for site in sites}


@pytest.fixture(scope="session")
def unlabelled_site(demo_sites: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder, sites = demo_sites
    out = tmp_path_factory.mktemp("unlabelled")
    for study in sorted((folder / sites[0]).iterdir()):
        if study.is_dir():
            shutil.copytree(study / "CT", out / study.name / "CT")
    return out


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def run_config(tracking_uri: str) -> dict[str, object]:
    return {"num-server-rounds": 2, "local-epochs": 1, "model-config": TINY_MODEL, "tracking-uri": tracking_uri,
            "alias": "test-federated", "min-nodes": 2, "round-timeout": 120.0}


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the test's tmp folder: some MLflow call in a full run creates an empty ./mlflow.db
    (MLflow 3.17's default store) — kept out of the repository."""
    monkeypatch.chdir(tmp_path)
