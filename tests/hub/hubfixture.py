"""A real JupyterHub (with configurable-http-proxy) running the platform API as a managed service.

For tests only: ``DummyAuthenticator`` and ``SimpleLocalProcessSpawner`` (no isolation between
users; DESIGN.md §3) — never a deployment's configuration. Users, groups and tokens are made
through the hub's REST API with an admin service token, as an operator's tooling would.

:func:`platform_hub` is a session fixture (import it into a test module to use it): Orthanc
(``orthanc`` fixture of tests/conftest.py) with synthetic studies of two institutions loaded by
``ingest_files`` (which assigns them to their datasets), one study in no dataset, and the hub
with users of every role. Everything is stopped at the end, also when tests fail.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.access.datasets import ingest_assigner, seed_datasets
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (DatasetSettings, HubSettings, PlatformSettings, QueueSettings, Settings,
                                 TasksSettings, dump_settings)
from medimg_hub.db.migrations import upgrade
from medimg_hub.db import make_engine
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SERVICE = "platform"
PREFIX = f"/services/{SERVICE}/"
ACCESS_SCOPE = f"access:services!service={SERVICE}"

#: The test datasets: site-a (SITEA) for every role, site-b (SITEB) for site-b residents only.
DATASETS = (
    DatasetSettings("site-a", "test site A", "SITEA", read=("engineers", "site-a-residents", "site-a-attendings",
                    "directors"), write=("engineers",), review=("site-a-residents", "site-a-attendings"),
                    finalise=("site-a-attendings",)),
    DatasetSettings("site-b", "test site B", "SITEB", read=("site-b-residents",), write=("site-b-writers",),
                    review=("site-b-residents",), finalise=()),
)
#: Role → (user name, groups, hub admin).
ROLES = {
    "engineer": ("eve", ("engineers",), False),
    "resident": ("rita", ("site-a-residents",), False),
    "attending": ("alan", ("site-a-attendings",), False),
    "director": ("dora", ("directors",), False),
    "admin": ("adam", ("admins",), True),
    "other-site": ("bert", ("site-b-residents", "site-b-writers"), False),
}

HUB_CONFIG = '''
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret = bytes.fromhex({cookie!r})
c.JupyterHub.pid_file = "{dir}/jupyterhub.pid"
# Tests only: no real authentication and no isolation between users (DESIGN.md section 3).
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", {access!r}]
# as hub/jupyterhub_config.py does (medimg_hub.hubconf.routes): kernels call the service's own port
c.Spawner.environment = {{"MEDIMG_DICOMWEB_URL": "http://127.0.0.1:{service_port}{prefix}dicom-web",
                         "MEDIMG_PLATFORM_URL": "http://127.0.0.1:{service_port}{prefix}".rstrip("/")}}
c.JupyterHub.services = [
    {{"name": "test-admin", "api_token": {admin_token!r}}},
    {{"name": {service!r}, "url": "http://127.0.0.1:{service_port}", "display": False, "oauth_no_confirm": True,
      "command": [{python!r}, "-m", "medimg_hub.platform_api", "--config", "{settings}"],
      "environment": {{"PYTHONPATH": {pythonpath!r}}}}},
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", {access!r}]}},
    {{"name": "platform-service", "scopes": ["read:users:name", "read:users:groups", "read:groups:name"],
      "services": [{service!r}]}},
    {{"name": "admin", "services": ["test-admin"]}},  # makes hub-admin users and their tokens
]
'''


@dataclass
class PlatformHub:
    """A running hub, proxy and platform API; ``url`` is the proxy's public address."""

    dir: Path
    settings: Settings
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(32))
    process: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def platform_url(self) -> str:
        """The platform API's root through the proxy (what kernels use)."""
        return f"{self.url}{PREFIX}"

    @property
    def direct_url(self) -> str:
        """The platform API's root on its own port (bypassing the proxy)."""
        return f"http://127.0.0.1:{self.service_port}{PREFIX}"

    def start(self) -> None:
        settings_file = dump_settings(self.settings, self.dir / "medimg.toml")
        pythonpath = os.pathsep.join([str(REPO), str(REPO / "hub")])
        config = HUB_CONFIG.format(
            port=self.port, hub_port=self.hub_port, proxy_api_port=self.proxy_api_port,
            chp=str(VENV_BIN / "configurable-http-proxy"), proxy_token=secrets.token_hex(32), dir=self.dir,
            cookie=secrets.token_hex(32), access=ACCESS_SCOPE, prefix=PREFIX, admin_token=self.admin_token,
            service=SERVICE, service_port=self.service_port, python=sys.executable, settings=settings_file,
            pythonpath=pythonpath)
        (self.dir / "jupyterhub_config.py").write_text(config)
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log = open(self.dir / "hub.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.dir / "jupyterhub_config.py")],
            cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(f"{self.url}/hub/api/", "the hub")
        self._wait(f"{self.platform_url}health", "the platform API")

    def _wait(self, url: str, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyterhub exited ({self.process.returncode}):\n{self.hub_log()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not answer at {url} within {timeout_s} s:\n{self.hub_log()}")

    def hub_log(self) -> str:
        path = self.dir / "hub.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the hub, its proxy and the service (the whole process group)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        try:  # the proxy and the service may outlive a hub that was killed
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()

    # --- the hub's REST API as an admin ------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.url}/hub/api/{path}", timeout=10,
                                    headers={"Authorization": f"token {self.admin_token}"}, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_user(self, name: str, groups: tuple[str, ...], admin: bool = False) -> None:
        self.api("POST", f"users/{name}", json={"admin": admin})
        for group in groups:
            try:
                self.api("POST", f"groups/{group}", json={"users": [name]})
            except requests.HTTPError as exc:
                if exc.response is None or exc.response.status_code != 409:
                    raise
                self.api("POST", f"groups/{group}/users", json={"users": [name]})

    def new_token(self, user: str, scopes: list[str] | None = None) -> str:
        """A new API token of ``user`` (default scopes: what a user server's token gets)."""
        body = {"note": "test", "scopes": scopes if scopes is not None else [ACCESS_SCOPE, "users:activity!user"]}
        return str(self.api("POST", f"users/{user}/tokens", json=body)["token"])


@dataclass(frozen=True)
class DemoStudy:
    """A synthetic study stored in the test PACS."""

    study: str
    series: str
    sops: tuple[str, ...]
    dataset: str | None


def make_study(institution: str, key: str, n_slices: int = 4, size: int = 32) -> list[Any]:
    """A small synthetic CT series of ``institution`` (deterministic UIDs from ``key``)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    volume = Volume(rng.normal(40, 30, (n_slices, size, size)).astype(np.int16), (2.0, 1.0, 1.0))
    uid = "1.2.826.0.1.3680043.8.498." + str(int.from_bytes(key.encode()[:12].ljust(12, b"0"), "big"))[:30]
    patient = SyntheticPatient(f"PID-{key}", f"PHANTOM^{key.upper()}", uid, institution_name=institution)
    return ct_series_from_volume(volume, patient, uid_entropy=[key])


def load_studies(orthanc: OrthancServer, engine_url: str, folder: Path) -> dict[str, DemoStudy]:
    """Write and ingest the test studies: two per site, one of an institution in no dataset."""
    plan = {"a1": "SITEA", "a2": "SITEA", "b1": "SITEB", "b2": "SITEB", "z1": "SITEZ"}
    found: dict[str, DemoStudy] = {}
    paths = []
    for key, institution in plan.items():
        series = make_study(institution, f"gateway-{key}")
        for i, ds in enumerate(series):
            path = folder / f"{key}-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        dataset = {"SITEA": "site-a", "SITEB": "site-b"}.get(institution)
        found[key] = DemoStudy(str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID),
                               tuple(str(d.SOPInstanceUID) for d in series), dataset)
    engine = make_engine(engine_url)
    try:
        ingest_files(orthanc.client(), paths, assign=ingest_assigner(engine))
    finally:
        engine.dispose()
    return found


@dataclass
class Platform:
    """What the tests get: the hub, the PACS, the studies and a token per role."""

    hub: PlatformHub
    orthanc: OrthancServer
    studies: dict[str, DemoStudy]
    settings: Settings
    tokens: dict[str, str]


@contextmanager
def running_platform(orthanc: OrthancServer, folder: Path, **platform: Any) -> Iterator[Platform]:
    """The test studies in ``orthanc``, and a hub running the platform API with a user and token per role.

    ``platform``: :class:`PlatformSettings` fields besides ``var_dir`` (e.g. ``dataset_rules_interval_s``).
    """
    settings = Settings(
        platform=PlatformSettings(var_dir=orthanc.settings.var_dir, **platform), pacs=orthanc.settings.pacs,
        tasks=TasksSettings(database_url=f"sqlite:///{folder / 'platform.db'}"),
        queue=QueueSettings(broker_url="memory://"), datasets=DATASETS,
        hub=HubSettings(port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
                        platform_api_port=free_port(), spawner="shared"),
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    engine.dispose()
    (folder / "dicom").mkdir()
    studies = load_studies(orthanc, settings.database_url, folder / "dicom")
    hub = PlatformHub(folder, settings, service_port=settings.hub.platform_api_port)
    try:
        hub.start()
        for role, (name, groups, admin) in ROLES.items():
            hub.add_user(name, groups, admin)
            hub.tokens[role] = hub.new_token(name)
        yield Platform(hub, orthanc, studies, settings, dict(hub.tokens))
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def platform_hub(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(orthanc, tmp_path_factory.mktemp("platform-hub")) as platform:
        yield platform


# --- helpers of the platform API tests --------------------------------------------------------------

def stow_body(datasets: list[Any]) -> tuple[bytes, str]:
    """A STOW-RS request body and its Content-Type."""
    from io import BytesIO

    boundary = secrets.token_hex(16)
    parts = []
    for ds in datasets:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buffer.getvalue() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def instance_in(study: DemoStudy, key: str, institution: str = "SITEA") -> Any:
    """One new synthetic instance (new series and SOP UIDs) inside an existing study."""
    ds = make_study(institution, key, n_slices=1, size=8)[0]
    ds.StudyInstanceUID = study.study
    return ds


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"token {token}"} if token else {}


def wait_for_audit(hub: PlatformHub, request_id: str, timeout_s: float = 10) -> dict[str, Any]:
    """The audit record of a request (records are written just after the response)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = [r for r in audit_rows(hub, limit=200) if r["request_id"] == request_id]
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit record for request {request_id}")


def audit_rows(hub: PlatformHub, **filters: Any) -> list[dict[str, Any]]:
    response = requests.get(f"{hub.platform_url}api/audit", params=filters, headers=auth(hub.tokens["admin"]),
                            timeout=10)
    response.raise_for_status()
    return list(response.json())
