"""``medimg fl up`` → ``medimg fl run`` → ``medimg fl down`` as real subprocesses, on a real platform.

The platform is a settings file (``[federation]`` with free ports, TLS and node authentication
on, as shipped), a real Orthanc holding the three demo sites' studies (each site = one
``[[datasets]]`` entry, found by InstitutionName) and a real MLflow tracking server. Slow by
nature: two deployed Flower rounds. Every process is stopped in ``finally``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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


#: A Flower run token: 128 random bytes in hex (``flwr.common.constant.FLWR_TASK_TOKEN_LENGTH``).
TOKEN = re.compile(rb"[0-9a-f]{256}")


class CommandLineWatch(threading.Thread):
    """Reads every process's command line every 0.1 s; keeps those of Flower's apps and any with a token."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.apps: set[bytes] = set()
        self.leaks: set[bytes] = set()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for entry in Path("/proc").iterdir():
                try:
                    cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
                except OSError:
                    continue
                if b"flwr-serverapp" in cmdline or b"flwr-clientapp" in cmdline:
                    self.apps.add(cmdline)
                if TOKEN.search(cmdline) or b"\0--token\0" in cmdline:
                    self.leaks.add(cmdline)


def _flwr_as(uid: int, flwr_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``flwr`` CLI as account ``uid``, run by the users' interpreter (``.venv-users``, what a kernel runs)."""
    kwargs = {} if uid == os.getuid() else {"user": uid, "group": uid, "extra_groups": []}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(flwr_home), "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run([str(REPO / ".venv-users" / "bin" / "python"), "-c", "from flwr.cli.app import app; app()",
                           *args], env=env, cwd=flwr_home, capture_output=True, text=True, timeout=120, **kwargs)


def _assert_a_kernel_cannot_use_the_control_api(settings: Settings) -> None:
    """Another account (``nobody``, as a user's kernel is) with the platform's own connection
    settings and CA cannot list or start runs; the same command as the platform's account lists
    them. (The Fleet gateway, the one port a kernel may reach, answers the Control API 403:
    ``test_gateway.py``.)"""
    federation = platform_federation(settings)
    home = Path(tempfile.mkdtemp(prefix="kernel-flwr-"))
    try:
        shutil.copy(federation.ca_cert, home / "ca.pem")  # type: ignore[arg-type]
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "platform"\n\n[superlink.platform]\naddress = "{federation.address}"\n'
            f'root-certificates = "{home / "ca.pem"}"\n')
        shutil.copytree(REPO / "federated", home / "app", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [home, *home.rglob("*")]:
            os.chown(path, 65534, 65534)
        as_platform = _flwr_as(os.getuid(), home, "ls", "platform", "--format", "json")
        assert as_platform.returncode == 0 and '"run-id"' in as_platform.stdout, as_platform.stdout + as_platform.stderr
        for args in (["ls", "platform", "--format", "json"], ["run", str(home / "app"), "platform"]):
            as_kernel = _flwr_as(65534, home, *args)
            said = as_kernel.stdout + as_kernel.stderr
            failed = as_kernel.returncode != 0 or '"success": false' in said  # `--format json` exits 0
            assert failed and '"run-id"' not in said, said
            assert re.search(r"SuperLink is unavailable|refused", said), said  # refused, not broken elsewhere
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_fl_up_run_down_trains_registers_and_leaves_nothing_behind(platform: Settings):
    uri = platform.mlflow_tracking_uri
    watch = CommandLineWatch()
    try:
        up = medimg(platform, "fl", "up", timeout_s=180)
        assert "superlink" in up and "fleet-gateway" in up and all(f"supernode-site-{s}" in up for s in "abc")
        _assert_sites_reach_only_the_gateway(platform)
        assert platform_federation(platform).loopback_firewall.installed()
        started = _federation_pids(platform)
        assert len(started) >= 7  # SuperLink + gateway + 3 SuperNodes + their SuperExecs
        watch.start()
        out = medimg(platform, "fl", "run", "--rounds", "2", "-c", f"model-config={TINY_MODEL}", timeout_s=900)
        watch.stop.set()
        assert "federated run finished" in out
        # the rounds' progress in the terminal, as Flower streams it (not only in the log file)
        assert "[ROUND 1" in out and "[ROUND 2" in out and "aggregate_train" in out, out
        assert len(watch.apps) >= 4 and not watch.leaks, (len(watch.apps), watch.leaks)  # 1 ServerApp, 3+ ClientApps
        assert all(b"--token-file\0/dev/fd/" in app for app in watch.apps)
        _assert_a_kernel_cannot_use_the_control_api(platform)
        federation = platform_federation(platform)
        assert "refused" not in federation.gateway.log_file.read_text()  # every SuperNode call was a Fleet call
        for node in federation.nodes.values():  # one message per round; the final model's evaluation after
            received = node.log_file.read_text()
            assert (received.count("Receiving: train"), received.count("Receiving: evaluate")) == (2, 1), received
    finally:
        watch.stop.set()
        medimg(platform, "fl", "down", timeout_s=120)
    assert not [pid for pid in started if _running(pid)], "medimg fl down left federation processes running"
    assert not _federation_pids(platform)
    assert not platform_federation(platform).loopback_firewall.installed()

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
