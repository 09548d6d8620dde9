"""``medimg fl up`` → ``medimg fl run`` → ``medimg fl down`` as real subprocesses, on a real platform.

The platform is a settings file (``[federation]`` with free ports, TLS and node authentication
on, as shipped), a real Orthanc holding the three demo sites' studies (each site = one
``[[datasets]]`` entry, found by InstitutionName) and a real MLflow tracking server. Slow by
nature: two deployed Flower rounds. Every process is stopped in ``finally``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medimg_hub.federation.deployment import _running, _spawned_by
from medimg_hub.federation.platform import platform_federation
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.tracking.server import MlflowServer
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port, port_in_use
from medimg_hub.settings import Settings, load_settings
from medimg_kernel.registry import load_segmentation_model
from medimg_federated.task import TINY_MODEL

from .mlflow_helpers import history, latest_federated_run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    while True:
        first = free_port()
        if first + count <= 65535 and not any(port_in_use("127.0.0.1", first + i) for i in range(1, count)):
            return first


@pytest.fixture(scope="module")
def platform(demo_sites, tmp_path_factory) -> Iterator[Settings]:
    """Settings of a platform whose PACS and MLflow run; the federation's ports free, not started."""
    root = tmp_path_factory.mktemp("platform")
    (root / "medimg.toml").write_text(
        f'[platform]\nvar_dir = "var"\n[pacs]\nhttp_port = {free_port()}\n[mlflow]\nport = {free_port()}\n'
        f"[federation]\nsuperlink_port = {free_port()}\nfleet_gateway_port = {free_port()}\n"
        f"first_node_port = {_free_run(3)}\n"
        'rounds = 3\nlocal_epochs = 1\nmin_nodes = 2\nround_timeout_s = 300.0\nmodel_alias = "test-federated"\n')
    settings = load_settings(root / "medimg.toml")
    pacs, mlflow = OrthancServer(settings), MlflowServer(settings)
    try:
        pacs.start()
        ingest_files(pacs.client(), sorted(demo_sites[0].rglob("*.dcm")))
        mlflow.start()
        yield settings
    finally:
        mlflow.stop()
        pacs.stop()


def medimg(settings: Settings, *args: str, timeout_s: float) -> str:
    """Run ``medimg --config FILE ARGS`` as a subprocess with this checkout on its path; its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "hub"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(Path(sys.executable).with_name("medimg")), "--config", str(settings.config_file), *args],
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, f"medimg {' '.join(args)} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _federation_pids(settings: Settings) -> list[int]:
    """Every federation process: SuperLink, Fleet gateway, SuperNodes and what they spawned (SuperExec, apps)."""
    federation = platform_federation(settings)
    processes = [federation.superlink, federation.gateway, *federation.nodes.values()]
    pids = [p for p in (proc.pid() for proc in processes) if p]
    return pids + [c for p in pids for c in _spawned_by(p)]


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _assert_sites_reach_only_the_gateway(settings: Settings) -> None:
    """The running SuperNodes were given the Fleet gateway's address; the SuperLink binds loopback."""
    federation, fed = platform_federation(settings), settings.federation
    for node in federation.nodes.values():
        argv = _cmdline(node.pid())  # type: ignore[arg-type]
        assert argv[argv.index("--superlink") + 1] == f"127.0.0.1:{fed.fleet_gateway_port}"
    superlink = _cmdline(federation.superlink.pid())  # type: ignore[arg-type]
    assert superlink[superlink.index("--host") + 1] == "127.0.0.1"
    assert superlink[superlink.index("--port") + 1] == str(fed.superlink_port) != str(fed.fleet_gateway_port)


def test_fl_up_run_down_trains_registers_and_leaves_nothing_behind(platform: Settings):
    uri = platform.mlflow_tracking_uri
    try:
        up = medimg(platform, "fl", "up", timeout_s=180)
        assert "superlink" in up and "fleet-gateway" in up and all(f"supernode-site-{s}" in up for s in "abc")
        _assert_sites_reach_only_the_gateway(platform)
        started = _federation_pids(platform)
        assert len(started) >= 7  # SuperLink + gateway + 3 SuperNodes + their SuperExecs
        out = medimg(platform, "fl", "run", "--rounds", "2", "-c", f"model-config={TINY_MODEL}", timeout_s=900)
        assert "federated run finished" in out
        federation = platform_federation(platform)
        assert "refused" not in federation.gateway.log_file.read_text()  # every SuperNode call was a Fleet call
        for node in federation.nodes.values():  # one message per round; the final model's evaluation after
            received = node.log_file.read_text()
            assert (received.count("Receiving: train"), received.count("Receiving: evaluate")) == (2, 1), received
    finally:
        medimg(platform, "fl", "down", timeout_s=120)
    assert not [pid for pid in started if _running(pid)], "medimg fl down left federation processes running"
    assert not _federation_pids(platform)

    run = latest_federated_run(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["num-server-rounds"] == "2" and run.data.params["alias"] == "test-federated"
    assert set(history(uri, run.info.run_id, "eval_dice")) == {1, 2}
    loss = history(uri, run.info.run_id, "train_loss")
    assert loss[2] < loss[1], loss  # the federation learns: the aggregated training loss falls
    for site in ("site_a", "site_b", "site_c"):  # dataset names as MLflow metric prefixes
        assert set(history(uri, run.info.run_id, f"{site}_train_loss")) == {1, 2}
        assert history(uri, run.info.run_id, f"{site}_train_num_examples")[1] >= 1
    loaded = load_segmentation_model(uri, "organ-segmentation", "test-federated", cache=False)
    assert loaded.tags["sites"] == "site-a,site-b,site-c" and loaded.tags["federated_rounds"] == "2"
    assert loaded.tags["federated_run_id"] == run.info.run_id
