"""The run config's one schema (``[tool.flwr.app.config]`` of ``federated/pyproject.toml``) and the
platform's one mapping of ``[federation]`` onto it."""

from __future__ import annotations

import pytest

from medimg_federated.config import RunSettings, defaults, resolve
from medimg_hub.federation.platform import RUN_CONFIG_KEYS, run_config
from medimg_hub.settings import Settings
from medimg_hub.settings.federation import FederationSettings
from medimg_kernel.errors import ConfigurationError


def test_the_platforms_run_config_uses_only_the_apps_keys():
    settings = Settings(federation=FederationSettings(min_nodes=1))
    config = run_config(settings)
    assert set(RUN_CONFIG_KEYS.values()) <= set(defaults())
    assert set(config) <= set(defaults())
    settings_view = RunSettings.from_run_config(config)
    assert settings_view.num_server_rounds == settings.federation.rounds
    assert settings_view.alias == settings.federation.model_alias


def test_overrides_are_checked_and_coerced_against_the_schema():
    config = resolve({"num-server-rounds": "2", "lr": 1, "register": "false", "run-name": 7})
    assert (config["num-server-rounds"], config["lr"], config["register"], config["run-name"]) == (2, 1.0, False, "7")
    assert resolve() == defaults()
    with pytest.raises(ConfigurationError, match=r"unknown keys \['num-rounds'\]"):
        resolve({"num-rounds": 3})
    with pytest.raises(ConfigurationError, match="local-epochs=2.5 is not of type int"):
        resolve({"local-epochs": 2.5})
    with pytest.raises(ConfigurationError, match="strategy must be fedavg|fedprox"):
        RunSettings.from_run_config({"strategy": "fedsgd"})
