"""The run config's one schema: ``[tool.flwr.app.config]`` of the app's ``pyproject.toml``.

Its keys are the run config's names and its values the defaults (and so the types); nothing else
lists them. :func:`resolve` checks a dict of overrides against it (an unknown key is refused by
name) and coerces each value to its default's type; :class:`RunSettings` is the typed view the
ServerApp and the sites read. Flower fuses ``flwr run --run-config``/``-c`` overrides with the same
table (and its SuperLink refuses unknown keys), so a deployed run and a simulated one agree.

The platform's operator settings (``[federation]`` of ``medimg.toml``) are mapped to these names
in one place, on the hub side (``medimg_hub.federation.platform.run_config``).

Standard library and :mod:`medimg_kernel.errors` only (no Flower, no torch).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from medimg_kernel.errors import ConfigurationError

#: The app's ``pyproject.toml`` (next to this package: in ``federated/`` and in an installed FAB).
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

STRATEGIES = ("fedavg", "fedprox")
DP_MODES = ("none", "server", "client")


@lru_cache(maxsize=1)
def _schema() -> tuple[tuple[str, Any], ...]:
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    nested = [k for k, v in table.items() if isinstance(v, dict)]
    if nested:
        raise ConfigurationError(f"{PYPROJECT}: [tool.flwr.app.config] {nested} are tables; this app's run config "
                                 "is flat")
    return tuple(table.items())


def defaults() -> dict[str, Any]:
    """``[tool.flwr.app.config]``: every run-config key with its default."""
    return dict(_schema())


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole run config: the defaults, with ``overrides`` checked and coerced to their types.

    Raises
    ------
    ConfigurationError
        A key that is not in ``[tool.flwr.app.config]`` (named, with the known keys), or a value
        that does not fit its default's type.
    """
    schema = defaults()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(schema))
    if unknown:
        raise ConfigurationError(f"run config: unknown keys {unknown}; known ([tool.flwr.app.config] of "
                                 f"federated/pyproject.toml): {sorted(schema)}")
    return schema | {key: coerce(key, value, schema[key]) for key, value in overrides.items()}


def coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (bool, int, float or str); text such as ``"2"`` or
    ``"true"`` (command-line overrides) is parsed."""
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif kind is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            number = float(value)
            if number.is_integer():
                return int(number)
        elif kind is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
            return float(value)
        elif kind is str and not isinstance(value, bool) and isinstance(value, (str, int, float)):
            return str(value)
    except ValueError:
        pass
    raise ConfigurationError(f"run config: {key}={value!r} is not of type {kind.__name__} (default {default!r})")


@dataclass(frozen=True)
class RunSettings:
    """The run config, typed: field ``x_y`` is key ``x-y`` of ``[tool.flwr.app.config]`` (the
    defaults are there, not here; :meth:`from_run_config` refuses a schema these fields don't match)."""

    num_server_rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    strategy: str
    proximal_mu: float
    min_nodes: int
    fraction: float
    expected_nodes: int
    round_timeout: float
    model_config: str
    type_id: str
    holdout_fraction: float
    seed: int
    num_threads: int
    dp: str
    dp_noise_multiplier: float
    dp_clipping_norm: float
    tracking_uri: str
    experiment: str
    run_name: str
    model_name: str
    alias: str
    register: bool

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        """From Flower's run config (or overrides of it): :func:`resolve`, then the choices checked."""
        config = resolve(run_config)
        names = {f.name.replace("_", "-") for f in fields(cls)}
        if names != set(config):
            raise ConfigurationError(f"{PYPROJECT} [tool.flwr.app.config] and RunSettings disagree: "
                                     f"{sorted(names ^ set(config))}")
        found = cls(**{key.replace("-", "_"): value for key, value in config.items()})
        if found.strategy not in STRATEGIES or found.dp not in DP_MODES:
            raise ConfigurationError(f"run config: strategy must be {'|'.join(STRATEGIES)} and dp "
                                     f"{'|'.join(DP_MODES)}; got strategy={found.strategy!r}, dp={found.dp!r}")
        return found

    def as_run_config(self) -> dict[str, Any]:
        """Back to run-config names (``num-server-rounds``, ...)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


__all__ = ["PYPROJECT", "STRATEGIES", "DP_MODES", "defaults", "resolve", "coerce", "RunSettings"]
