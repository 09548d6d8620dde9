"""The Flower app in simulation mode (every site in this process): refusals, strategies, DP.

The same ServerApp, strategies, ClientApp and mods as a deployment; only the transport is
in-process (:mod:`medimg_federated.simulation`), so these run in seconds per round.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from medimg_federated.simulation import simulate
from medimg_kernel.errors import ConfigurationError
from medimg_kernel.registry import load_segmentation_model

from .mlflow_helpers import failures, history, latest_federated_run

pytestmark = pytest.mark.slow


def nodes(site_folders: dict[str, Path]) -> list[dict[str, str]]:
    return [{"site": site, "folder": str(folder)} for site, folder in site_folders.items()]


def test_fedavg_tracks_rounds_and_sites_and_registers(site_folders, run_config, tracking_uri):
    simulate(nodes(site_folders), run_config)
    run = latest_federated_run(tracking_uri)
    assert run.info.status == "FINISHED"
    loss = history(tracking_uri, run.info.run_id, "train_loss")
    liver = history(tracking_uri, run.info.run_id, "eval_dice_liver")
    assert set(loss) == set(liver) == {1, 2}
    # it learns: the loss falls, and the liver (the largest organ) is found better after a round of
    # federated training than by the untrained network each site received in round 1
    assert loss[2] < loss[1] and 0.0 <= liver[1] < liver[2] <= 1.0, (loss, liver)
    for site in site_folders:
        assert set(history(tracking_uri, run.info.run_id, f"{site}_eval_dice")) == {1, 2}
        assert history(tracking_uri, run.info.run_id, f"{site}_train_num_examples")[1] >= 1
    client = MlflowClient(tracking_uri=tracking_uri)
    checkpoints = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert checkpoints == ["checkpoints/round-001.pt", "checkpoints/round-002.pt"]
    loaded = load_segmentation_model(tracking_uri, "organ-segmentation", "test-federated", cache=False)
    assert loaded.tags["sites"] == ",".join(sorted(site_folders))
    assert loaded.tags["federated_rounds"] == "2" and loaded.tags["federated_run_id"] == run.info.run_id
    assert loaded.config.channels == (4, 8, 16)
    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    aliases = registry.get_registered_model("organ-segmentation").aliases
    assert "test-federated" in aliases and "champion" not in aliases  # the clinical alias was not touched


def test_site_without_labels_trains_nothing_and_says_why(site_folders, unlabelled_site, run_config,
                                                         tracking_uri):
    sites = nodes(site_folders)[:2] + [{"site": "NOLABELS", "folder": str(unlabelled_site)}]
    simulate(sites, run_config | {"num-server-rounds": 1, "register": False})
    run = latest_federated_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert history(tracking_uri, run.info.run_id, "train_sites_failed") == {1: 1.0}
    assert history(tracking_uri, run.info.run_id, "train_sites_replied") == {1: 2.0}
    text = failures(tracking_uri, run.info.run_id)
    assert "NOLABELS" in text and "no training pairs" in text and "no finalised SEG" in text


def test_mismatched_architecture_is_refused(site_folders, run_config, tracking_uri):
    other = '{"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0, "roi_size": [16, 32, 32]}'
    sites = nodes(site_folders)
    sites[2] = sites[2] | {"model-config": other}
    simulate(sites, run_config | {"num-server-rounds": 1, "register": False})
    run = latest_federated_run(tracking_uri)
    text = failures(tracking_uri, run.info.run_id)
    assert list(site_folders)[2] in text and "do not match the local network" in text
    assert history(tracking_uri, run.info.run_id, "train_sites_replied") == {1: 2.0}


@pytest.mark.parametrize("overrides", [
    {"strategy": "fedprox", "proximal-mu": 0.1},
    {"dp": "server", "dp-noise-multiplier": 0.01, "dp-clipping-norm": 5.0},
    {"dp": "client", "dp-noise-multiplier": 0.01, "dp-clipping-norm": 5.0},
], ids=["fedprox", "dp-server", "dp-client"])
def test_strategies_and_privacy_options_run(site_folders, run_config, tracking_uri, overrides):
    simulate(nodes(site_folders), run_config | {"num-server-rounds": 1, "register": False} | overrides)
    run = latest_federated_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert history(tracking_uri, run.info.run_id, "train_sites_replied") == {1: 3.0}
    assert run.data.params["dp"] == overrides.get("dp", "none")


def test_unknown_run_config_key_is_refused(site_folders, run_config):
    with pytest.raises(ConfigurationError, match="num-rounds"):
        simulate(nodes(site_folders), run_config | {"num-rounds": 3})
