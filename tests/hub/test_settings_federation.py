"""``[federation]`` of medimg.toml: defaults, refusals naming the key, and the Flower run config it gives."""

from __future__ import annotations

import pytest

from medimg_hub.federation.platform import platform_federation, run_config, site_node_configs
from medimg_hub.settings import Settings, load_settings
from medimg_hub.settings.federation import FederationSettings
from medimg_kernel.errors import ConfigurationError


def test_defaults_without_a_federation_section(tmp_path):
    (tmp_path / "s.toml").write_text("[pacs]\nhttp_port = 9999\n")
    fed = load_settings(tmp_path / "s.toml").federation
    assert fed == FederationSettings()
    assert (fed.superlink_port, fed.fleet_gateway_port, fed.first_node_port, fed.rounds, fed.strategy, fed.tls,
            fed.node_auth) == (9092, 9093, 9094, 3, "fedavg", True, True)


def test_values_are_read_and_become_the_flower_run_config(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[mlflow]\nport = 5600\nregistered_model = "organs"\n'
        '[federation]\nsuperlink_port = 9200\nfleet_gateway_port = 9201\nfirst_node_port = 9300\ndatasets = ["site-c", "site-a"]\n'
        'rounds = 5\nlocal_epochs = 2\nstrategy = "fedprox"\nproximal_mu = 0.1\nmin_nodes = 1\nfraction = 0.5\n'
        'round_timeout_s = 30\ntls = false\nnode_auth = false\ndp = "server"\ndp_noise_multiplier = 0.1\n')
    settings = load_settings(tmp_path / "s.toml")
    config = run_config(settings)
    assert {k: config[k] for k in (
        "num-server-rounds", "local-epochs", "strategy", "proximal-mu", "min-nodes", "fraction", "expected-nodes",
        "round-timeout", "dp", "dp-noise-multiplier", "tracking-uri", "model-name", "alias")} == {
        "num-server-rounds": 5, "local-epochs": 2, "strategy": "fedprox", "proximal-mu": 0.1, "min-nodes": 1,
        "fraction": 0.5, "expected-nodes": 2, "round-timeout": 30.0, "dp": "server", "dp-noise-multiplier": 0.1,
        "tracking-uri": "http://127.0.0.1:5600/services/mlflow", "model-name": "organs", "alias": "federated"}
    assert run_config(settings, {"num-server-rounds": 1})["num-server-rounds"] == 1  # the CLI's options win
    nodes = site_node_configs(settings)
    assert list(nodes) == ["site-c", "site-a"]
    assert nodes["site-a"]["qido-filter"] == "InstitutionName=Northfield General Hospital (synthetic)"
    federation = platform_federation(settings)
    assert (federation.superlink_port, federation.gateway_port, [s.port for s in federation.sites]) == (
        9200, 9201, [9300, 9301])
    assert all(f"--superlink 127.0.0.1:9201 " in " ".join(n.argv) for n in federation.nodes.values())
    assert not federation.tls and not federation.auth


@pytest.mark.parametrize(("text", "message"), [
    ('strategy = "fedsgd"', r"\[federation\] strategy='fedsgd' must be one of"),
    ('dp = "local"', r"\[federation\] dp='local'"),
    ("rounds = 0", r"\[federation\] rounds=0 must be at least 1"),
    ("fraction = 1.5", r"\[federation\] fraction=1.5 must be in \(0, 1\]"),
    ('rounds = "3"', r"\[federation\] rounds must be of type int"),
    ("round_timeout_s = 0", r"\[federation\] round_timeout_s=0.0 must be positive"),
    ('datasets = ["site-x"]', r"\[federation\] datasets \['site-x'\] are not \[\[datasets\]\] names"),
    ("superlink_port = 8000", "two services share a port"),
    ("fleet_gateway_port = 9092", "two services share a port"),
    ("fleet_gateway_port = 70000", r"\[federation\] fleet_gateway_port=70000 is not a valid TCP port"),
    ("first_node_port = 8080", r"\[federation\] first_node_port=8080: the SuperNodes use ports 8080-8082, "
                               r"which overlap \[\('\[hub\] api_port', 8081\)\]"),
    ("tls = 1", r"\[federation\] tls must be of type bool"),
    ("rouns = 3", r"unknown key\(s\) \['rouns'\] in \[federation\]"),
])
def test_wrong_values_are_refused_with_the_key_named(tmp_path, text, message):
    (tmp_path / "s.toml").write_text(f"[federation]\n{text}\n")
    with pytest.raises(ConfigurationError, match=message):
        load_settings(tmp_path / "s.toml")


def test_more_min_nodes_than_sites_is_refused_when_a_run_is_configured():
    settings = Settings(federation=FederationSettings(datasets=("site-a",), min_nodes=2))
    with pytest.raises(ConfigurationError, match=r"min_nodes=2 exceeds the 1 taking-part sites"):
        run_config(settings)
