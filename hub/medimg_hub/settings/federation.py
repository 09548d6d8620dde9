"""The ``[federation]`` section of ``medimg.toml``: Flower federated training's operator settings.

Kept apart from :mod:`medimg_hub.settings` (which reads it with every other section) so the
federation's knobs and their checks sit together.
"""

from __future__ import annotations

from dataclasses import dataclass

from medimg_kernel.errors import ConfigurationError

#: Strategies and differential-privacy modes the federated app offers (``medimg_federated.config``).
FEDERATION_STRATEGIES = ("fedavg", "fedprox")
FEDERATION_DP_MODES = ("none", "server", "client")


@dataclass(frozen=True)
class FederationSettings:
    """Federated training with Flower (``medimg fl up | run | down``; ``federated/README.md``).

    A SuperLink and one SuperNode per taking-part dataset run on this machine; each site reads
    only its own dataset's studies from the platform PACS. ``medimg fl run`` turns these
    settings into the Flower run config (keys of ``[tool.flwr.app.config]`` in
    ``federated/pyproject.toml``; the mapping is ``medimg_hub.federation.platform.RUN_CONFIG_KEYS``);
    its command-line options override them.
    """

    #: The SuperLink's one HTTP(S) port on 127.0.0.1. Flower 1.41 serves the Fleet API (sites),
    #: the Control API (starts runs; no user authentication) and the ServerAppIo API on this
    #: single port: they cannot be split (federated/README.md, "Security of a deployment").
    superlink_port: int = 9092
    #: The Fleet gateway's port (:mod:`medimg_hub.federation.gateway`): the only address the
    #: SuperNodes are given. It forwards ``POST /v1/fleet/...`` to the SuperLink and answers
    #: everything else (the Control and runtime APIs) 403.
    fleet_gateway_port: int = 9093
    #: SuperNode ``i`` (0-based, in ``datasets`` order) serves its ClientApp API on
    #: 127.0.0.1:``first_node_port + i``.
    first_node_port: int = 9094
    #: Datasets (``[[datasets]]`` names) that take part, one site each, read from the platform
    #: PACS by the dataset's InstitutionName. Empty = every dataset.
    datasets: tuple[str, ...] = ()
    #: Server rounds, and epochs each site trains on its own data per round.
    rounds: int = 3
    local_epochs: int = 1
    #: "fedavg" or "fedprox" (sites add the proximal term ``proximal_mu``/2·‖w − w_global‖²).
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    #: Sites a round needs: it starts when ``min_nodes`` are online and goes on without the others.
    #: Keep it below the number of sites, or one lost site stalls the run.
    min_nodes: int = 2
    #: Fraction of the online sites asked to train and evaluate in each round (0 < fraction ≤ 1).
    fraction: float = 1.0
    #: Seconds a round waits for replies; later replies are dropped and the site reported in MLflow.
    round_timeout_s: float = 600.0
    #: Seconds ``medimg fl run`` waits for the whole run.
    run_timeout_s: float = 7200.0
    #: HTTPS between sites and the SuperLink (a private CA under var/flower/pki), and SuperNode
    #: authentication (only nodes whose public key was registered may join).
    tls: bool = True
    node_auth: bool = True
    #: Let only the platform's OS account connect to the SuperLink's and SuperNodes' loopback
    #: ports (an nftables table; needs nftables and root). Users' kernels share loopback, and
    #: Flower's Control API has no user authentication: with this off, any kernel can start or
    #: stop runs. Turn it off only where no other account runs code on the machine.
    loopback_firewall: bool = True
    #: Differential privacy with fixed clipping: "none", "server" (the server clips each update and
    #: adds Gaussian noise) or "client" (sites clip, the server adds noise).
    dp: str = "none"
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 10.0
    #: MLflow experiment of the federated runs, and the alias the final model version gets
    #: (pipelines load ``[mlflow] model_alias``: promote a federated version explicitly).
    experiment: str = "organ-segmentation-federated"
    model_alias: str = "federated"


def validate_federation(fed: FederationSettings, dataset_names: list[str],
                         ports: list[tuple[str, str, int]]) -> None:
    """Refuse a ``[federation]`` section that cannot work, naming the key.

    Parameters
    ----------
    fed
        The section as read.
    dataset_names
        Names of the ``[[datasets]]`` tables (``fed.datasets`` must be among them).
    ports
        ``(section, key, port)`` of every other service, to keep SuperNode ports
        (``first_node_port + i``, one per taking-part dataset) off them.
    """
    if fed.strategy not in FEDERATION_STRATEGIES:
        raise ConfigurationError(f"[federation] strategy={fed.strategy!r} must be one of {FEDERATION_STRATEGIES}")
    if fed.dp not in FEDERATION_DP_MODES:
        raise ConfigurationError(f"[federation] dp={fed.dp!r} must be one of {FEDERATION_DP_MODES}")
    for name in ("rounds", "local_epochs", "min_nodes"):
        if getattr(fed, name) < 1:
            raise ConfigurationError(f"[federation] {name}={getattr(fed, name)} must be at least 1")
    if not 0.0 < fed.fraction <= 1.0:
        raise ConfigurationError(f"[federation] fraction={fed.fraction} must be in (0, 1]")
    for name in ("round_timeout_s", "run_timeout_s"):
        if getattr(fed, name) <= 0:
            raise ConfigurationError(f"[federation] {name}={getattr(fed, name)} must be positive (seconds)")
    if fed.proximal_mu < 0 or fed.dp_noise_multiplier < 0 or fed.dp_clipping_norm <= 0:
        raise ConfigurationError("[federation] proximal_mu and dp_noise_multiplier must be >= 0 and "
                                 "dp_clipping_norm > 0")
    known = list(dataset_names)
    unknown = [d for d in fed.datasets if d not in known]
    if unknown:
        raise ConfigurationError(f"[federation] datasets {unknown} are not [[datasets]] names; known: {known}")
    n_sites = len(fed.datasets or known)
    node_ports = range(fed.first_node_port, fed.first_node_port + n_sites)
    if node_ports.stop - 1 > 65535:
        raise ConfigurationError(f"[federation] first_node_port={fed.first_node_port} + {n_sites} sites "
                                 "passes 65535")
    taken = [(f"[{s}] {n}", p) for s, n, p in ports if p in node_ports and (s, n) != ("federation", "first_node_port")]
    if taken:
        raise ConfigurationError(f"[federation] first_node_port={fed.first_node_port}: the SuperNodes use ports "
                                 f"{node_ports.start}-{node_ports.stop - 1}, which overlap {taken}")


__all__ = ["FEDERATION_STRATEGIES", "FEDERATION_DP_MODES", "FederationSettings", "validate_federation"]
