"""A site's warm worker (``medimg_federated.site_worker``): the ClientApp forwards messages to it.

Run through the simulation (the same ServerApp and ClientApp as a deployment), with one site
answered by a real worker process and the other in this process: weights and metrics cross
the socket, and so does a refusal.
"""

from __future__ import annotations

import secrets

import pytest

from medimg_hub.federation.deployment import APP_DIR, Federation, SiteNode
from medimg_federated.simulation import simulate
from medimg_hub.servers.process import free_port

from .mlflow_helpers import failures, history, latest_federated_run

pytestmark = pytest.mark.slow


def test_messages_forwarded_to_a_site_worker(site_folders, unlabelled_site, run_config, tracking_uri, tmp_path):
    federation = Federation(tmp_path / "var", free_port(), [SiteNode("W", {"folder": str(unlabelled_site)}, 1)])
    worker = federation.workers["W"]
    socket, key = federation._worker_files("W")
    socket.parent.mkdir(mode=0o700, parents=True)
    key.write_bytes(secrets.token_bytes(32))
    sites = [{"site": site, "folder": str(folder)} for site, folder in site_folders.items()][:2]
    try:
        worker.start(180)
        remote = {"worker-socket": str(socket), "worker-key-file": str(key)}
        simulate([sites[0] | remote, sites[1], {"site": "NOLABELS", "folder": str(unlabelled_site)} | remote],
                 run_config | {"num-server-rounds": 1, "register": False})
    finally:
        worker.stop()
    run = latest_federated_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert history(tracking_uri, run.info.run_id, "train_sites_replied") == {1: 2.0}
    assert set(history(tracking_uri, run.info.run_id, f"{sites[0]['site']}_eval_dice")) == {1}
    assert "NOLABELS" in failures(tracking_uri, run.info.run_id)
    assert "site worker ready" in worker.log_file.read_text()
    # the worker runs this checkout's app: its package as a module, found through PYTHONPATH (was: the file's path)
    assert "-m medimg_federated.site_worker" in " ".join(worker.argv) and str(APP_DIR) in worker.env["PYTHONPATH"]
