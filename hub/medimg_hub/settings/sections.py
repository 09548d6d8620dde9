"""The operator's settings: one TOML file, every key documented, every key optional.

The file is ``medimg.toml`` in the repository root unless ``--config`` or the
``MEDIMG_CONFIG`` environment variable names another; ``medimg config`` prints
the effective values. Settings are read once, at the command line's entry, and
passed down; no library code reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from medimg_kernel.errors import ConfigurationError

from medimg_hub.settings.destinations import (DeliverySettings, DestinationSettings, WebhookSettings,
                                              validate_destinations)
from medimg_hub.settings.federation import FederationSettings, validate_federation
from medimg_hub.settings.receiver import ReceiverSettings, RouteSettings, validate_receiver
from medimg_hub.settings.remotes import RemoteSettings, validate_remotes

#: The repository root (``hub/medimg_hub/settings/sections.py`` → four levels up).
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG_FILE = REPO_ROOT / "medimg.toml"
CONFIG_ENV_VAR = "MEDIMG_CONFIG"


@dataclass(frozen=True)
class PlatformSettings:
    """Where the platform keeps its state and which address it serves on."""

    #: Folder for run-time state (PACS storage, databases, logs, pid files, secrets);
    #: relative paths are relative to the settings file's folder.
    var_dir: Path = Path("var")
    #: Address every service binds to. Keep 127.0.0.1 unless a reverse proxy with TLS is in front.
    bind_host: str = "127.0.0.1"
    #: Seconds to wait for a service to answer after it was started.
    start_timeout_s: float = 30.0
    #: Seconds between two applications of the datasets' saved query rules to studies that are in
    #: no dataset yet (arrivals join their rule's dataset within this time); 0: never.
    dataset_rules_interval_s: float = 30.0


@dataclass(frozen=True)
class PacsSettings:
    """The embedded Orthanc PACS (Debian packages orthanc, orthanc-dicomweb)."""

    #: Orthanc's HTTP port (REST and DICOMweb). Orthanc 1.10 cannot bind to one address:
    #: it listens on all interfaces and refuses non-loopback clients (RemoteAccessAllowed=false).
    http_port: int = 8042
    #: DICOM (DIMSE) port; 0 turns the DICOM server off (the default: DICOMweb only).
    dicom_port: int = 0
    #: Orthanc's DICOM application entity title.
    aet: str = "MEDIMG"
    #: The Orthanc executable and the folder with its plugins (Debian's locations).
    executable: str = "/usr/sbin/Orthanc"
    plugins_dir: Path = Path("/usr/share/orthanc/plugins")
    #: HTTP worker threads of Orthanc.
    http_threads: int = 20
    #: The embedded Orthanc's DICOMweb root path.
    dicomweb_root: str = "/dicom-web/"
    #: An external DICOMweb PACS instead of the embedded Orthanc: its DICOMweb base URL, e.g.
    #: "https://pacs.example.org/dicom-web". "" = the embedded Orthanc (``medimg up`` starts it).
    #: The gateway, pipelines, review, federation sites and imports all use it; the keys below
    #: say how the platform authenticates to it.
    url: str = ""
    #: "none", "basic" (credentials_file: JSON {"username": ..., "password": ...}), "bearer"
    #: (credentials_file: the token, one line) or "client-certificate" (client_certificate and
    #: client_key, PEM). Keep the files mode 0600: they are the platform's key to every image.
    auth: str = "none"
    credentials_file: str = ""
    client_certificate: str = ""
    client_key: str = ""
    #: Verify the external PACS's TLS certificate, against ca_file ("" = the system's CAs).
    verify_tls: bool = True
    ca_file: str = ""


#: Path of the MLflow service behind the hub (``/services/<name>``), and the tracking server's
#: ``--static-prefix``: the server answers only below it.
MLFLOW_PREFIX = "/services/mlflow"


@dataclass(frozen=True)
class MlflowSettings:
    """The MLflow tracking server and model registry (a platform service)."""

    #: HTTP port of the tracking server on 127.0.0.1.
    port: int = 5500
    #: Backend store URI; empty = SQLite at ``mlruns/mlflow.db`` in the repository
    #: (MLflow 3.17 disables the file store by default).
    backend_store_uri: str = ""
    #: Where the server keeps artifacts (served to clients with --serve-artifacts).
    artifacts_dir: Path = Path("mlruns/artifacts")
    #: Registered model the pipelines use, and the alias they load.
    registered_model: str = "organ-segmentation"
    model_alias: str = "champion"
    #: Host names (without port) people reach the hub by, besides 127.0.0.1, localhost and this
    #: machine's own names: the tracking server refuses other Host headers (``--allowed-hosts``).
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueSettings:
    """The task queue's broker (Celery). Empty ``broker_url`` = the platform's own Redis on loopback."""

    #: A Redis or RabbitMQ URL for a broker run elsewhere (e.g. ``redis://host:6379/0``).
    broker_url: str = ""
    #: Port of the platform's own Redis on 127.0.0.1 (used when broker_url is empty).
    redis_port: int = 6390
    redis_executable: str = "/usr/bin/redis-server"
    #: Seconds before the broker redelivers an unacknowledged task. Must exceed the longest
    #: stage, or long stages run twice; the task store's reconciler covers lost workers sooner.
    visibility_timeout_s: int = 7200
    #: Worker groups (one Celery queue each, one software environment each) that ``medimg up``
    #: starts a worker for on this machine. Other machines run ``medimg worker GROUP``.
    worker_groups: tuple[str, ...] = ("default", "segmentation")
    #: Run stage notebooks in a kernel kept warm between jobs (imports paid once per worker).
    warm_kernels: bool = True
    #: Jobs one warm kernel runs before it is replaced.
    kernel_max_runs: int = 50
    #: Seconds between the dispatcher's passes (re-sending lost messages, reconciling lost workers).
    dispatch_interval_s: float = 2.0
    #: A queued job not claimed this many seconds after its message was sent is sent again.
    redispatch_after_s: float = 120.0


@dataclass(frozen=True)
class TasksSettings:
    """The platform database (tasks, jobs, history) and the job watchdog."""

    #: SQLAlchemy URL; empty = SQLite at ``var/platform.db``. PostgreSQL:
    #: ``postgresql+psycopg://user:pass@host:5432/medimg``.
    database_url: str = ""
    #: Seconds between heartbeats of a running job.
    heartbeat_s: float = 5.0
    #: A running job whose last heartbeat is older than this (seconds) has lost its worker.
    stale_after_s: float = 30.0


@dataclass(frozen=True)
class PipelinesSettings:
    """Where pipeline descriptors and their notebooks live."""

    #: One folder per pipeline (``<id>/pipeline.yaml`` + stage notebooks), relative to this file.
    root: Path = Path("notebooks/pipelines")


@dataclass(frozen=True)
class ReviewSettings:
    """Clinician review (the worklist and viewer dashboards, and the platform API's review endpoints)."""

    #: A claim on a case lapses after this many seconds without being renewed (opening the case renews it).
    claim_ttl_s: float = 1800.0
    #: Largest draft (compressed labels of one case) the platform API keeps, in bytes.
    max_draft_bytes: int = 64 << 20
    #: Seconds a dashboard's kernel lives on after its page was closed or reloaded (no browser
    #: connected, nothing running) before the Voila server shuts it down; checked every
    #: fifth of that (at least 5 s).
    dashboard_kernel_idle_s: float = 120.0


@dataclass(frozen=True)
class HubSettings:
    """JupyterHub, its proxy, and the platform API service behind it (issue #4)."""

    #: Public port of configurable-http-proxy: the one URL people open.
    port: int = 8000
    #: JupyterHub's own API port and the proxy's API port (loopback only).
    api_port: int = 8081
    proxy_api_port: int = 8001
    #: The platform API (DICOMweb gateway + tasks API), a hub-managed service at /services/platform/.
    platform_api_port: int = 8090
    #: The MLflow proxy (the hub's login in front of the tracking server), a hub-managed service
    #: at /services/mlflow/.
    mlflow_proxy_port: int = 8092
    #: Seconds a user's server may stay idle (no browser or kernel activity) before the idle culler
    #: (jupyterhub-idle-culler, a hub service) stops it, releasing its memory and its GPU; 0 = never.
    idle_timeout_s: float = 3600.0
    #: "system-users": each user's server runs as their own OS account (LocalProcessSpawner; the
    #: isolation DESIGN.md §3 needs). "shared": one OS account for all (development and tests only).
    spawner: str = "system-users"
    #: CUDA device ids in this machine's GPU pool (one per engineer-GPU server): ["auto"] = the GPUs
    #: nvidia-smi lists (none without a driver or device); [] = none; else the ids to lend. The GPU
    #: profile is offered only when the pool has a device.
    gpu_devices: tuple[str, ...] = ("auto",)
    #: Login throttling (medimg_hub.hubconf.throttle), per account and client (the browser that
    #: logged in before, else the address): failures a client may make before it waits, and the
    #: longest wait in seconds (waits double from 1 s; also the window of the per-account count).
    lockout_attempts: int = 5
    lockout_s: float = 300.0
    #: "local" (hashed passwords in the platform database), "oidc" or "ldap".
    authenticator: str = "local"
    #: Hub users who are JupyterHub admins (they approve sign-ups and manage users and groups).
    admin_users: tuple[str, ...] = ("admin",)
    #: "local" only: show the sign-up form (accounts still need an admin's approval). Off: the
    #: admin creates accounts (``python -m medimg_hub.demo.users`` shows how).
    signup: bool = False
    #: The Python that runs users' servers and kernels; empty = the hub's own interpreter. With
    #: spawner "system-users" it must be readable and executable by those accounts (e.g. /opt/medimg/venv).
    user_python: str = ""
    #: "system-users": where the OS accounts' homes are created (mode 0700 each), and the prefix of
    #: their names (hub user ``alice`` runs as OS account ``medimg-alice``).
    homes_dir: Path = Path("/home")
    os_user_prefix: str = "medimg-"
    #: Seconds a user's server may take to start.
    spawn_timeout_s: int = 60
    #: "oidc": the identity provider's endpoints, the client, and the claims holding the username
    #: and the groups (mapped 1:1 to hub groups). The client secret is read from the file
    #: (empty = ``var/secrets/oidc-client-secret``).
    oidc_authorize_url: str = ""
    oidc_token_url: str = ""
    oidc_userdata_url: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: str = ""
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    #: "ldap": the directory server, the DN template(s) users bind with ("{username}" is replaced),
    #: and "LDAP group DN=hub group" pairs: members of the DN join the hub group at each login.
    ldap_server: str = ""
    ldap_port: int = 636
    ldap_bind_dn_templates: tuple[str, ...] = ()
    ldap_group_map: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSettings:
    """A dataset: a named set of studies, with grants to hub groups (``[[datasets]]`` tables).

    Studies join a dataset by their InstitutionName (``institution``) when they are loaded,
    or explicitly through the platform API.
    """

    name: str = ""
    description: str = ""
    #: InstitutionName of the studies that belong here (exact match).
    institution: str = ""
    #: Hub groups granted each right.
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    finalise: tuple[str, ...] = ()
    #: Hub groups that may export the dataset's studies (de-identified) out of the platform.
    export: tuple[str, ...] = ()
    #: Accept only image objects from the DICOM receiver (``[receiver]``): a structured report,
    #: presentation state or other non-image object routed here is refused with its SOP class named.
    images_only: bool = False
    #: Where a finalised review's SEG and SR are pushed: ``[[destinations]]`` names (empty = nowhere).
    export_to: tuple[str, ...] = ()
    #: The ``[[webhooks]]`` table told of each finalised decision ("" = none).
    webhook: str = ""


#: The demo's datasets: one per demo site (see medimg.toml).
DEFAULT_DATASETS = (
    DatasetSettings("site-a", "Demo site A (synthetic)", "Northfield General Hospital (synthetic)", read=("engineers", "site-a"), write=("engineers",),
                    review=("site-a",), finalise=("site-a-attendings",)),
    DatasetSettings("site-b", "Demo site B (synthetic)", "Lakeside University Clinic (synthetic)", read=("engineers", "site-b"), write=("engineers",),
                    review=("site-b",), finalise=("site-b-attendings",)),
    DatasetSettings("site-c", "Demo site C (synthetic)", "Harbour District Hospital (synthetic)", read=("site-c",), write=(),
                    review=("site-c",), finalise=("site-c-attendings",)),
)


@dataclass(frozen=True)
class DemoSettings:
    """Synthetic demo sites loaded by ``medimg up --demo``."""

    n_sites: int = 3
    studies_per_site: int = 4
    #: Seed of the phantom generator; the same seed gives the same studies and UIDs.
    seed: int = 20261122
    #: Create one hub login per role (``medimg_hub.demo.users``); passwords in var/secrets/demo-users.json.
    hub_users: bool = True


@dataclass(frozen=True)
class Settings:
    """Every setting of the platform, grouped as in ``medimg.toml``."""

    platform: PlatformSettings = field(default_factory=PlatformSettings)
    pacs: PacsSettings = field(default_factory=PacsSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    tasks: TasksSettings = field(default_factory=TasksSettings)
    pipelines: PipelinesSettings = field(default_factory=PipelinesSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    hub: HubSettings = field(default_factory=HubSettings)
    datasets: tuple[DatasetSettings, ...] = DEFAULT_DATASETS
    demo: DemoSettings = field(default_factory=DemoSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    routes: tuple[RouteSettings, ...] = ()
    remotes: tuple[RemoteSettings, ...] = ()
    destinations: tuple[DestinationSettings, ...] = ()
    webhooks: tuple[WebhookSettings, ...] = ()
    deliveries: DeliverySettings = field(default_factory=DeliverySettings)
    #: The folder relative paths are resolved against (the settings file's folder).
    base_dir: Path = REPO_ROOT
    #: The file these settings were read from (None: built-in defaults).
    config_file: Path | None = None

    @property
    def var_dir(self) -> Path:
        """Absolute run-time state folder."""
        return self.resolve(self.platform.var_dir)

    def resolve(self, path: Path) -> Path:
        """``path`` made absolute against the settings file's folder."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def database_url(self) -> str:
        """The platform database's SQLAlchemy URL (default: SQLite under var/)."""
        return self.tasks.database_url or f"sqlite:///{self.var_dir / 'platform.db'}"

    @property
    def mlflow_backend_store_uri(self) -> str:
        return self.mlflow.backend_store_uri or f"sqlite:///{self.base_dir / 'mlruns' / 'mlflow.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The tracking server on loopback, for hub-side processes (workers, federation).

        The server serves everything below :data:`MLFLOW_PREFIX` (``--static-prefix``), the path
        the hub's proxy gives the MLflow service, so one path works on both sides of the proxy.
        """
        return f"http://127.0.0.1:{self.mlflow.port}{MLFLOW_PREFIX}"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for display (paths as strings)."""
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        out.pop("config_file")
        return _stringify(out)


def dump_settings(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a TOML file that :func:`load_settings` reads back to the same values.

    Relative paths are written resolved, so the file works from any folder. Used to hand the
    effective settings to the platform's child processes.
    """
    document: dict[str, Any] = {}
    for section in dataclasses.fields(settings):
        if section.name in ("base_dir", "config_file"):
            continue
        if section.name in _ARRAYS:
            document[section.name] = [_toml_table(table, settings) for table in getattr(settings, section.name)]
        else:
            document[section.name] = _toml_table(getattr(settings, section.name), settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


#: Sections written as arrays of tables (``[[name]]``).
_ARRAYS = ("datasets", "routes", "remotes", "destinations", "webhooks")


def _toml_table(section: Any, settings: Settings) -> dict[str, Any]:
    """One section as TOML values: paths resolved and written as strings, tuples as arrays; unset
    (``None``) values left out, so they read back as their defaults."""
    table = {}
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(settings.resolve(value))
        elif isinstance(value, tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        table[item.name] = value
    return table


def _stringify(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def _build(cls: type, section: str, raw: dict[str, Any]) -> Any:
    """Instantiate a settings dataclass from a TOML table, refusing unknown keys and wrong types."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {unknown} in [{section}]; valid keys are {sorted(known)}"
        )
    values: dict[str, Any] = {}
    defaults = cls()
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if isinstance(getattr(defaults, key), Path):
            if not isinstance(value, str):
                raise ConfigurationError(f"[{section}] {key} must be a path string, got {value!r}")
            value = Path(value)
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif expected is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigurationError(f"[{section}] {key} must be a list of strings, got {value!r}")
            value = tuple(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigurationError(
                f"[{section}] {key} must be of type {expected.__name__}, got {value!r}"
            )
        values[key] = value
    return cls(**values)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the settings file; a missing default file gives all defaults.

    Parameters
    ----------
    path
        The TOML file. ``None`` means the repository's ``medimg.toml``; a path
        given explicitly must exist.
    """
    explicit = path is not None
    file = Path(path) if path is not None else DEFAULT_CONFIG_FILE
    if not file.exists():
        if explicit:
            raise ConfigurationError(f"settings file {file} does not exist")
        return Settings()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"settings file {file} is not valid TOML: {exc}") from exc
    sections = {
        "platform": PlatformSettings, "pacs": PacsSettings, "mlflow": MlflowSettings, "queue": QueueSettings,
        "tasks": TasksSettings, "pipelines": PipelinesSettings, "review": ReviewSettings, "hub": HubSettings,
        "demo": DemoSettings, "federation": FederationSettings, "receiver": ReceiverSettings,
        "deliveries": DeliverySettings,
    }
    unknown = sorted(set(raw) - set(sections) - set(_ARRAYS))
    if unknown:
        raise ConfigurationError(f"unknown section(s) {unknown} in {file}; valid: {sorted(sections)}, "
                                 "[[datasets]], [[routes]], [[remotes]], [[destinations]] and [[webhooks]]")
    built: dict[str, Any] = {name: _build(cls, name, raw.get(name, {})) for name, cls in sections.items()}
    built["datasets"] = _datasets(raw.get("datasets"))
    for name, cls in (("routes", RouteSettings), ("remotes", RemoteSettings), ("destinations", DestinationSettings),
                      ("webhooks", WebhookSettings)):
        tables = raw.get(name, [])
        if not isinstance(tables, list):
            raise ConfigurationError(f"{name} must be an array of tables: [[{name}]] ...")
        built[name] = tuple(_build(cls, f"{name}[{i}]", table) for i, table in enumerate(tables))
    _validate(built)
    return Settings(**built, base_dir=file.resolve().parent, config_file=file.resolve())


def _datasets(raw: Any) -> tuple[DatasetSettings, ...]:
    """``[[datasets]]`` tables; absent = the demo datasets."""
    if raw is None:
        return DEFAULT_DATASETS
    if not isinstance(raw, list):
        raise ConfigurationError("datasets must be an array of tables: [[datasets]] ...")
    found = tuple(_build(DatasetSettings, f"datasets[{i}]", table) for i, table in enumerate(raw))
    names = [d.name for d in found]
    for i, dataset in enumerate(found):
        if not dataset.name:
            raise ConfigurationError(f"[[datasets]] number {i + 1} has no name")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"dataset names must be unique: {names}")
    return found


def _validate(built: dict[str, Any]) -> None:
    pacs, demo, tasks = built["pacs"], built["demo"], built["tasks"]
    hub = built["hub"]
    ports = [("pacs", "http_port", pacs.http_port), ("mlflow", "port", built["mlflow"].port),
             ("queue", "redis_port", built["queue"].redis_port), ("hub", "port", hub.port),
             ("hub", "api_port", hub.api_port), ("hub", "proxy_api_port", hub.proxy_api_port),
             ("hub", "platform_api_port", hub.platform_api_port),
             ("federation", "superlink_port", built["federation"].superlink_port),
             ("federation", "fleet_gateway_port", built["federation"].fleet_gateway_port),
             ("federation", "first_node_port", built["federation"].first_node_port)]
    for section, name, port in ports:
        if not 1 <= port <= 65535:
            raise ConfigurationError(f"[{section}] {name}={port} is not a valid TCP port")
    if not 0 <= pacs.dicom_port <= 65535:
        raise ConfigurationError(f"[pacs] dicom_port={pacs.dicom_port} is not a valid TCP port")
    if len({p for _, _, p in ports}) != len(ports):
        raise ConfigurationError(f"two services share a port: {[(f'[{s}] {n}', p) for s, n, p in ports]}")
    if hub.spawner not in ("system-users", "shared"):
        raise ConfigurationError(f"[hub] spawner={hub.spawner!r} must be 'system-users' or 'shared'")
    if hub.authenticator not in ("local", "oidc", "ldap"):
        raise ConfigurationError(f"[hub] authenticator={hub.authenticator!r} must be 'local', 'oidc' or 'ldap'")
    if not built["queue"].worker_groups:
        raise ConfigurationError("[queue] worker_groups must name at least one group")
    if tasks.stale_after_s < 3 * tasks.heartbeat_s:
        raise ConfigurationError("[tasks] stale_after_s must be at least 3 × heartbeat_s, or live jobs look lost")
    if pacs.url and not pacs.url.startswith(("http://", "https://")):
        raise ConfigurationError(f"[pacs] url={pacs.url!r} must be an http:// or https:// DICOMweb base URL "
                                 "(or \"\" for the embedded Orthanc)")
    if pacs.auth not in ("none", "basic", "bearer", "client-certificate"):
        raise ConfigurationError(f"[pacs] auth={pacs.auth!r} must be 'none', 'basic', 'bearer' or 'client-certificate'")
    if pacs.url and pacs.auth in ("basic", "bearer") and not pacs.credentials_file:
        raise ConfigurationError(f"[pacs] auth={pacs.auth!r} needs credentials_file")
    if pacs.url and pacs.auth == "client-certificate" and not (pacs.client_certificate and pacs.client_key):
        raise ConfigurationError("[pacs] auth='client-certificate' needs client_certificate and client_key")
    if not pacs.dicomweb_root.startswith("/") or not pacs.dicomweb_root.endswith("/"):
        raise ConfigurationError(f"[pacs] dicomweb_root={pacs.dicomweb_root!r} must start and end with '/'")
    if not 1 <= len(pacs.aet) <= 16:
        raise ConfigurationError(f"[pacs] aet={pacs.aet!r} must be 1-16 characters")
    review = built["review"]
    if review.claim_ttl_s <= 0 or review.max_draft_bytes <= 0:
        raise ConfigurationError("[review] claim_ttl_s and max_draft_bytes must be positive")
    if demo.n_sites < 1 or demo.studies_per_site < 1:
        raise ConfigurationError("[demo] n_sites and studies_per_site must be at least 1")
    validate_federation(built["federation"], [d.name for d in built["datasets"]], ports)
    validate_receiver(built["receiver"], built["routes"], [d.name for d in built["datasets"]])
    validate_remotes(built["remotes"])
    validate_destinations(built["destinations"], built["webhooks"], built["deliveries"],
                          [(d.name, d.export_to, d.webhook) for d in built["datasets"]])
    if built["receiver"].port and built["receiver"].port in {p for _, _, p in ports}:
        raise ConfigurationError(f"[receiver] port={built['receiver'].port} is another service's port")

