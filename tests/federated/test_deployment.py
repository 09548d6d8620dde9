"""The federation as deployed: a real SuperLink and one SuperNode process per site.

Slow by nature (DESIGN.md §6: a Flower round costs ~20–40 s of fixed overhead here: polling
and a fresh ClientApp process per message). Every process is stopped in ``finally``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from medimg_hub.federation.deployment import Federation, SiteNode
from medimg_hub.servers.process import free_port

from .mlflow_helpers import failures, history, latest_federated_run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_unregistered_supernode_is_refused(site_folders, tmp_path):
    """With node authentication a SuperNode whose key was never registered cannot join.

    (A full TLS + authentication run through ``medimg fl up/run/down``: ``test_cli.py``.)
    """
    folder = str(next(iter(site_folders.values())))
    member = SiteNode("MEMBER", {"folder": folder}, free_port())
    rogue = SiteNode("ROGUE", {"folder": folder}, free_port(), registered=False)
    federation = Federation(tmp_path / "var", free_port(), [member, rogue], tls=True, auth=True)
    try:
        federation.up()
        assert len(federation.wait_online(1)) == 1
        deadline = time.monotonic() + 90
        while federation.nodes["ROGUE"].pid() is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert federation.nodes["ROGUE"].pid() is None
        assert "Failed to activate SuperNode" in federation.nodes["ROGUE"].log_file.read_text()
        assert len(federation.online_nodes()) == 1
    finally:
        federation.down()
    assert federation.superlink.pid() is None and all(n.pid() is None for n in federation.nodes.values())


def _received(log_file: Path) -> int:
    return log_file.read_text(errors="replace").count("Receiving:") if log_file.exists() else 0


def test_killed_supernode_does_not_stall_the_federation(site_folders, run_config, tracking_uri, tmp_path):
    nodes = [SiteNode(site, {"folder": str(folder)}, free_port()) for site, folder in site_folders.items()]
    victim = nodes[-1].site
    federation = Federation(tmp_path / "var", free_port(), nodes)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            federation.run(run_config | {"round-timeout": 20.0, "register": False}, timeout_s=600)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    try:
        federation.up()
        federation.wait_online(3)
        runner = threading.Thread(target=run)
        runner.start()
        deadline = time.monotonic() + 300
        while _received(federation.nodes[victim].log_file) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # round 1's train, then round 2's (which also evaluates round 1's model) arrives
        federation.kill_node(victim)
        killed_at = time.monotonic()
        runner.join(timeout=400)
        assert not runner.is_alive(), "the federation stalled after a SuperNode was killed"
        assert not errors, errors
        assert time.monotonic() - killed_at < 200
    finally:
        federation.down()
    run_info = latest_federated_run(tracking_uri)
    assert run_info.info.status == "FINISHED"
    assert history(tracking_uri, run_info.info.run_id, "train_sites_replied") == {1: 3.0, 2: 2.0}
    assert history(tracking_uri, run_info.info.run_id, "train_sites_failed")[2] == 1.0
    assert f"round 2 train: {victim}: no reply before the round timeout" in failures(tracking_uri,
                                                                                      run_info.info.run_id)
