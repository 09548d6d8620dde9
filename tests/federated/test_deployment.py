"""The federation as deployed: a real SuperLink, one SuperNode process per site, each site's own Orthanc.

Slow by nature (DESIGN.md §6: a Flower round costs ~20–40 s of fixed overhead here: polling
and a fresh ClientApp process per message). Every process is stopped in ``finally``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from medimg_hub.federation import Federation, SiteNode
from medimg_hub.ingest import ingest_files
from medimg_hub.orthanc import OrthancServer
from medimg_hub.process import free_port
from medimg_hub.settings import PacsSettings, PlatformSettings, Settings
from medimg_kernel.registry import load_segmentation_model

from .mlflow_helpers import failures, history, latest_federated_run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def site_pacs(site_folders, tmp_path_factory):
    """One Orthanc per site, holding only that site's studies: ``{site: OrthancServer}``."""
    servers: dict[str, OrthancServer] = {}
    try:
        for site, folder in site_folders.items():
            var_dir = tmp_path_factory.mktemp(f"pacs-{site}")
            server = OrthancServer(Settings(platform=PlatformSettings(var_dir=var_dir),
                                            pacs=PacsSettings(http_port=free_port())))
            server.start()
            servers[site] = server
            ingest_files(server.client(), sorted(folder.rglob("*.dcm")))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_tls_authenticated_federation_trains_from_each_sites_pacs(site_pacs, site_folders, run_config,
                                                                  tracking_uri, tmp_path):
    nodes = [SiteNode(site, {"dicomweb-url": pacs.dicomweb_url, "credentials-file": str(pacs.secret_file)},
                      free_port()) for site, pacs in site_pacs.items()]
    rogue = SiteNode("ROGUE", {"folder": str(next(iter(site_folders.values())))}, free_port(), registered=False)
    federation = Federation(tmp_path / "var", free_port(), [*nodes, rogue], tls=True, auth=True)
    try:
        federation.up()
        assert len(federation.wait_online(3)) == 3
        federation.run(run_config, timeout_s=900)
        # the node whose key was never registered was refused and is not part of the federation
        assert federation.nodes["ROGUE"].pid() is None
        assert "Failed to activate SuperNode" in federation.nodes["ROGUE"].log_file.read_text()
        assert len(federation.online_nodes()) == 3
    finally:
        federation.down()
    assert federation.superlink.pid() is None and all(n.pid() is None for n in federation.nodes.values())
    run = latest_federated_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert set(history(tracking_uri, run.info.run_id, "eval_dice")) == {1, 2}
    for site in site_pacs:
        assert set(history(tracking_uri, run.info.run_id, f"{site}_train_loss")) == {1, 2}
    loaded = load_segmentation_model(tracking_uri, "organ-segmentation", "test-federated", cache=False)
    assert loaded.tags["sites"] == ",".join(sorted(site_pacs)) and loaded.tags["federated_rounds"] == "2"


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
        while _received(federation.nodes[victim].log_file) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)  # train 1, evaluate 1, then round 2's train message arrives
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
