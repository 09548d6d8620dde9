"""Servers and kernels that clean up after themselves. The idle culler (jupyterhub-idle-culler, a
hub service): a server left idle longer than ``[hub] idle_timeout_s`` is stopped and its GPU goes
back to the pool. A dashboard's kernel outlives its closed or reloaded page only
``[review] dashboard_kernel_idle_s``. A real hub (spawner "shared", CHP) with a one-device fake pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from medimg_hub.settings import ReviewSettings

from .hubproc import Hub, HubBrowser, hub_log_tail, run_in_kernel, running_hub, wait_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE_TIMEOUT_S = 10
#: [review] dashboard_kernel_idle_s of the test hub.
KERNEL_IDLE_S = 10


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("culled-hub")
    with running_hub(root, spawner="shared", homes_dir=root / "homes", gpu_devices=("0",),
                     idle_timeout_s=float(IDLE_TIMEOUT_S), spawn_timeout_s=45) as running:
        yield running


def api(hub: Hub, token: str, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, f"{hub.url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                            timeout=60, **kwargs)


def test_an_idle_server_is_stopped_and_its_gpu_released(hub: Hub) -> None:
    admin = HubBrowser(hub)
    assert admin.logged_in(admin.login("admin", hub.passwords["admin"]))
    token = admin.new_token("admin")
    assert api(hub, token, "POST", "/users", json={"usernames": ["engineer9"]}).status_code in (201, 409)
    api(hub, token, "POST", "/groups/engineers/users", json={"users": ["engineer9"]}).raise_for_status()
    try:
        started = api(hub, token, "POST", "/users/engineer1/server", json={"profile": "engineer-gpu"})
        assert started.status_code in (201, 202), started.text
        assert wait_server(hub, token, "engineer1")["servers"][""]["ready"]
        out = run_in_kernel(hub, "engineer1", token, "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")
        assert out["stdout"].strip() == "0", out
        busy = api(hub, token, "POST", "/users/engineer9/server", json={"profile": "engineer-gpu"})
        assert busy.status_code >= 400 and "all 1 GPU(s)" in busy.text
        deadline = time.monotonic() + 6 * IDLE_TIMEOUT_S
        while api(hub, token, "GET", "/users/engineer1").json().get("servers") and time.monotonic() < deadline:
            time.sleep(1)
        assert not api(hub, token, "GET", "/users/engineer1").json().get("servers"), hub_log_tail(hub)
        again = api(hub, token, "POST", "/users/engineer9/server", json={"profile": "engineer-gpu"})
        assert again.status_code in (201, 202), again.text  # the GPU went back to the pool
        assert wait_server(hub, token, "engineer9")["servers"][""]["ready"]
    finally:
        for name in ("engineer1", "engineer9"):
            api(hub, token, "DELETE", f"/users/{name}/server")


def _kernels_of(server_pid: int) -> list[int]:
    """Kernel processes (ipykernel) the Voila server started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and b"ipykernel" in cmdline:
            found.append(int(entry.name))
    return found


def _voila_pid() -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"medimg_voila.app" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError("no Voila server process")


@pytest.fixture(scope="module")
def dashboard_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub whose idle culler is off (its 10 s would stop the server under test) and whose
    dashboards' kernels outlive their page KERNEL_IDLE_S."""
    root = tmp_path_factory.mktemp("dashboard-hub")
    with running_hub(root, spawner="shared", homes_dir=root / "homes", idle_timeout_s=0.0, spawn_timeout_s=45,
                     review=ReviewSettings(dashboard_kernel_idle_s=float(KERNEL_IDLE_S))) as running:
        yield running


def test_reloading_a_dashboard_leaves_at_most_one_kernel(dashboard_hub: Hub) -> None:
    """20 loads of the worklist (each runs the dashboard in a new kernel, as a reload does): the
    kernels of pages that are gone are shut down, at most one is left."""
    hub = dashboard_hub
    resident = HubBrowser(hub)
    assert resident.logged_in(resident.login("resident-a", hub.passwords["resident-a"]))
    admin = HubBrowser(hub)
    assert admin.logged_in(admin.login("admin", hub.passwords["admin"]))
    token = admin.new_token("admin")
    try:
        landing = resident.spawn_form("resident-a", "clinician")
        assert "Review worklist" in landing.text, hub_log_tail(hub)
        for _ in range(19):
            assert "Review worklist" in resident.get(f"{hub.url}/user/resident-a/", timeout=120).text
        server = _voila_pid()
        assert len(_kernels_of(server)) > 1  # each load ran its own kernel
        deadline = time.monotonic() + 8 * KERNEL_IDLE_S
        while len(_kernels_of(server)) > 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(_kernels_of(server)) <= 1, hub_log_tail(hub)
    finally:
        api(hub, token, "DELETE", "/users/resident-a/server")
