"""The MLflow tracking server and model registry, run by the platform on loopback.

SQLite backend under ``mlruns/`` (MLflow 3.17 disables the file store by default), artifacts
served by the server itself (``--serve-artifacts``) so clients never write to their own disk,
one worker and no job execution (~0.45 GB instead of ~1.8 GB, DESIGN.md §6). MLflow has no
login that knows the hub: it listens on 127.0.0.1 and reaches people through the hub's MLflow
service (:mod:`medimg_hub.tracking.proxy`) at ``/services/mlflow``. The server answers below that
same path (``--static-prefix``, no trailing slash), so the proxy forwards paths unchanged, and it
accepts only the Host headers people use for the hub (``--allowed-hosts``).

The server requires a login of its own (MLflow's ``basic-auth`` app): the platform account (its
admin), whose password is generated into ``var/secrets/mlflow.json`` (0600) and known only hub
side, and one account per hub user, whose password the proxy derives from a key in
``var/secrets/mlflow-users.json`` (:mod:`medimg_hub.tracking.accounts`). Users' kernels, which
share the loopback interface, cannot use MLflow except through the proxy, which checks their hub
identity and role and forwards as their own account. Permissions: READ by default (engineers
read each other's experiments and the registry, and manage what they create); a dataset's
experiments only for its grantees. Hub-side
processes (workers, the CLI, the federation's ServerApp) get the account as
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (:func:`export_client_credentials`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path

import requests

from medimg_hub.secrets import stored_secret, write_private
from medimg_hub.servers.process import ManagedProcess
from medimg_hub.settings import MLFLOW_PREFIX, Settings

#: The platform's MLflow account (the basic-auth app's admin).
ACCOUNT = "medimg-platform"
#: Seconds MLflow caches a verified password (it hashes with PBKDF2 on every request otherwise).
AUTH_CACHE_TTL_S = 60


def credentials(settings: Settings) -> tuple[str, str]:
    """(username, password) of the platform's MLflow account; generated on first use (hub side only)."""
    found = stored_secret(settings.var_dir / "secrets" / "mlflow.json", {"username": ACCOUNT, "password": None})
    return found["username"], found["password"]


def account_key(settings: Settings) -> bytes:
    """The hub-side key from which the proxy derives users' MLflow passwords (generated on first use)."""
    found = stored_secret(settings.var_dir / "secrets" / "mlflow-users.json", {"key": None})
    return found["key"].encode()


def export_client_credentials(settings: Settings) -> None:
    """Let this (hub-side) process and its children authenticate to MLflow: set the client's variables."""
    username, password = credentials(settings)
    os.environ["MLFLOW_TRACKING_USERNAME"] = username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def allowed_hosts(settings: Settings) -> list[str]:
    """``--allowed-hosts``: loopback, this machine's names and ``[mlflow] allowed_hosts``.

    The list replaces MLflow's defaults; each name is allowed bare and with any port.
    """
    names = ["127.0.0.1", "localhost", socket.gethostname(), socket.getfqdn(), *settings.mlflow.allowed_hosts]
    unique = list(dict.fromkeys(n for n in names if n))
    return [entry for name in unique for entry in (name, f"{name}:*")]


class MlflowServer:
    """Start, stop and address the tracking server."""

    name = "mlflow"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.mlflow_tracking_uri
        self.artifacts_dir = settings.resolve(settings.mlflow.artifacts_dir)
        mlflow_exe = Path(sys.executable).with_name("mlflow")
        argv = [
            str(mlflow_exe), "server",
            "--backend-store-uri", settings.mlflow_backend_store_uri,
            "--artifacts-destination", str(self.artifacts_dir),
            "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(settings.mlflow.port),
            "--workers", "1",
            "--static-prefix", MLFLOW_PREFIX,
            "--allowed-hosts", ",".join(allowed_hosts(settings)),
            "--app-name", "basic-auth",
        ]
        export_client_credentials(settings)
        self.auth_config = settings.var_dir / "mlflow" / "basic_auth.ini"
        flask_key = hashlib.sha256(b"medimg mlflow flask key:" + credentials(settings)[1].encode()).hexdigest()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config), "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key}
        self.process = ManagedProcess("mlflow", argv, settings.var_dir, ready=self.is_ready, url=self.url, env=env)

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> bool:
        return self.process.start(max(self.settings.platform.start_timeout_s, 60.0), prepare=self._prepare,
                                  ports=[("[mlflow] port", self.settings.mlflow.port)])

    def _prepare(self) -> None:
        username, password = credentials(self.settings)
        auth_db = self.settings.var_dir / "mlflow" / "basic_auth.db"
        write_private(self.auth_config, "\n".join([
            "[mlflow]", "default_permission = READ", f"database_uri = sqlite:///{auth_db}",
            f"admin_username = {username}", f"admin_password = {password}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}", ""]))
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if not self.settings.mlflow.backend_store_uri:  # the default SQLite store under mlruns/
            store = self.settings.base_dir / "mlruns"
            store.mkdir(exist_ok=True)
            os.chmod(store, 0o700)  # users' kernels reach MLflow through its server, never its files

    def stop(self) -> bool:
        return self.process.stop()
