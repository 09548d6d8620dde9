"""The platform's federation, from ``[federation]`` of ``medimg.toml``: what ``medimg fl`` runs.

Each taking-part dataset (``[federation] datasets``, default all ``[[datasets]]``) is one site:
a SuperNode whose ClientApp reads only that dataset's studies from the platform PACS (QIDO-RS
filtered by the dataset's InstitutionName), with the PACS credentials from their file (mode
0600, never on a command line). The same settings find the same processes again (pid files
under ``var/run``), so ``medimg fl down`` works from a new process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medimg_kernel.errors import ConfigurationError

from medimg_hub.federation.deployment import Federation, SiteNode
from medimg_hub.settings import DatasetSettings, Settings

log = logging.getLogger(__name__)


def taking_part(settings: Settings) -> tuple[DatasetSettings, ...]:
    """The datasets that take part, in ``[federation] datasets`` order (default: all)."""
    by_name = {d.name: d for d in settings.datasets}
    names = settings.federation.datasets or tuple(by_name)
    return tuple(by_name[name] for name in names)


def site_node_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """``{dataset name: Flower node config}``: the platform PACS, filtered by the dataset's institution."""
    from medimg_hub.pacs.connection import pacs_connection
    from medimg_hub.pacs.orthanc import OrthancServer  # addresses and secret file only; nothing is started

    pacs = pacs_connection(settings)
    if pacs.embedded:
        credentials = str(OrthancServer(settings).secret_file)
    elif settings.pacs.auth in ("basic", "none") and not pacs.is_tls:
        credentials = str(settings.resolve(Path(settings.pacs.credentials_file))) if settings.pacs.credentials_file else ""
    else:
        raise ConfigurationError(f"[pacs] auth={settings.pacs.auth!r} over {pacs.dicomweb_url.split(':')[0]}: federation "
                                 "sites read a PACS by URL with basic authentication (or none) over plain HTTP only; "
                                 "give each site a folder or a PACS it reaches that way")
    configs = {}
    for dataset in taking_part(settings):
        if not dataset.institution:
            raise ConfigurationError(f"[[datasets]] {dataset.name!r} has no institution: a site needs it to find "
                                     "its own studies in the PACS; set it or leave the dataset out of "
                                     "[federation] datasets")
        configs[dataset.name] = {"dicomweb-url": pacs.dicomweb_url, "credentials-file": credentials,
                                 "qido-filter": f"InstitutionName={dataset.institution}"}
    return configs


def platform_federation(settings: Settings) -> Federation:
    """The federation ``[federation]`` describes: SuperLink on ``superlink_port``, the sites' Fleet
    gateway on ``fleet_gateway_port``, node ``i`` on ``first_node_port + i``, TLS, node
    authentication and the loopback firewall as set."""
    fed = settings.federation
    nodes = [SiteNode(site, config, fed.first_node_port + i)
             for i, (site, config) in enumerate(site_node_configs(settings).items())]
    return Federation(settings.var_dir, fed.superlink_port, nodes, gateway_port=fed.fleet_gateway_port,
                      tls=fed.tls, auth=fed.node_auth, firewall=fed.loopback_firewall)


#: ``[federation]`` key → the Flower app's run-config key (``[tool.flwr.app.config]`` of
#: ``federated/pyproject.toml``, the run config's one schema). The only place the operator's names
#: meet the app's; ``expected-nodes``, ``tracking-uri`` and ``model-name`` come from elsewhere (below).
RUN_CONFIG_KEYS = {
    "rounds": "num-server-rounds", "local_epochs": "local-epochs", "strategy": "strategy",
    "proximal_mu": "proximal-mu", "min_nodes": "min-nodes", "fraction": "fraction",
    "round_timeout_s": "round-timeout", "dp": "dp", "dp_noise_multiplier": "dp-noise-multiplier",
    "dp_clipping_norm": "dp-clipping-norm", "experiment": "experiment", "model_alias": "alias",
}


def run_config(settings: Settings, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Flower run config from ``[federation]`` and ``[mlflow]``; ``overrides`` (run-config keys) win.

    Keys are the app's (:data:`RUN_CONFIG_KEYS`); the app checks them and their types against its
    schema (``medimg_federated.config``), and the SuperLink refuses a key the schema lacks, by name.

    Raises
    ------
    ConfigurationError
        ``min-nodes`` exceeds the number of taking-part sites (no round could start).
    """
    fed = settings.federation
    n_sites = len(taking_part(settings))
    config: dict[str, Any] = {app_key: getattr(fed, key) for key, app_key in RUN_CONFIG_KEYS.items()}
    config |= {"expected-nodes": n_sites, "tracking-uri": settings.mlflow_tracking_uri,
               "model-name": settings.mlflow.registered_model}
    config |= dict(overrides or {})
    if int(config["min-nodes"]) > n_sites:
        raise ConfigurationError(f"[federation] min_nodes={config['min-nodes']} exceeds the {n_sites} taking-part "
                                 "sites: no round could start; lower it or add datasets")
    return config


def fl_up(settings: Settings) -> dict[str, str]:
    """Start the federation (idempotent) and wait for its nodes; ``{process: url}`` for status output."""
    federation = platform_federation(settings)
    federation.up(timeout_s=max(settings.platform.start_timeout_s, 60.0))
    federation.wait_online(len(federation.sites))
    return {federation.superlink.name: federation.superlink.url, federation.gateway.name: federation.gateway.url,
            **{p.name: p.url for p in federation.nodes.values()}}


def fl_run(settings: Settings, overrides: Mapping[str, Any] | None = None,
           on_line: Callable[[str], object] | None = None) -> Path:
    """Run the app on the started federation; the ``flwr run`` log file (each line also to ``on_line``)."""
    return platform_federation(settings).run(run_config(settings, overrides),
                                             timeout_s=settings.federation.run_timeout_s, on_line=on_line)


def fl_down(settings: Settings) -> None:
    """Stop every federation process (SuperLink, Fleet gateway, SuperNodes and what they spawned)."""
    platform_federation(settings).down()


__all__ = ["taking_part", "site_node_configs", "platform_federation", "RUN_CONFIG_KEYS", "run_config", "fl_up",
           "fl_run", "fl_down"]
