"""Shared test fixtures.

Fixtures
--------
strict_pydicom
    Switches pydicom to raise on invalid values while writing (as highdicom's tests do),
    restoring the previous mode afterwards.
assert_valid_dicom
    ``assert_valid_dicom(dataset_or_path)`` writes the dataset if needed and runs
    ``dciodvfy`` (Debian dicom3tools) on it; fails the test on any line starting with
    ``Error`` (dciodvfy's exit code is not reliable, DESIGN.md §6).
write_and_read
    ``write_and_read(dataset)`` saves to a temporary file and reads it back with pydicom.

In CI (``CI`` set, as ``.ci/run`` runs) a skipped test fails: every component the suite needs is
installed by scripts/bootstrap.sh, so a skip there means a missing component hidden behind a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from medimg_hub.pacs.orthanc import OrthancServer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, a skip (a component missing) is a failure, with the skip's reason."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where scripts/bootstrap.sh installs every component: {reason}"


@pytest.fixture
def strict_pydicom() -> Iterator[None]:
    with pydicom.config.strict_reading():
        previous = pydicom.config.settings.writing_validation_mode
        pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
        try:
            yield
        finally:
            pydicom.config.settings.writing_validation_mode = previous


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of dciodvfy's report that start with ``Error``."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy not found: run scripts/bootstrap.sh (Debian package dicom3tools)")
    proc = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode < 0 or proc.returncode >= 128:
        pytest.fail(f"dciodvfy crashed (rc {proc.returncode}) on {path}:\n{proc.stderr[-2000:]}")
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def assert_valid_dicom(tmp_path: Path) -> Callable[[Dataset | Path], None]:
    counter = iter(range(1_000_000))

    def check(item: Dataset | Path) -> None:
        if isinstance(item, Dataset):
            path = tmp_path / f"dciodvfy-{next(counter)}.dcm"
            item.save_as(path, enforce_file_format=True)
        else:
            path = Path(item)
        errors = dciodvfy_errors(path)
        assert not errors, f"dciodvfy found {len(errors)} errors in {path}:\n" + "\n".join(errors)

    return check


@pytest.fixture
def write_and_read(tmp_path: Path) -> Callable[[Dataset], Dataset]:
    counter = iter(range(1_000_000))

    def round_trip(ds: Dataset) -> Dataset:
        path = tmp_path / f"roundtrip-{next(counter)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return pydicom.dcmread(path)

    return round_trip


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator["OrthancServer"]:
    """A real Orthanc with the DICOMweb plugin, on a free loopback port, for the whole session.

    State lives in a temporary ``var/``; the process is stopped at the end even when tests fail.
    """
    from medimg_hub.pacs.orthanc import OrthancServer
    from medimg_hub.servers.process import free_port
    from medimg_hub.settings import PacsSettings, PlatformSettings, Settings

    var_dir = tmp_path_factory.mktemp("var")
    settings = Settings(platform=PlatformSettings(var_dir=var_dir), pacs=PacsSettings(http_port=free_port()))
    server = OrthancServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
