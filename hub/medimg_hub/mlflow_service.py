"""The MLflow tracking server and model registry, run by the platform on loopback.

SQLite backend under ``mlruns/`` (MLflow 3.17 disables the file store by default), artifacts
served by the server itself (``--serve-artifacts``) so clients never write to their own disk,
one worker and no job execution (~0.45 GB instead of ~1.8 GB, DESIGN.md §6). MLflow has no
login that knows the hub: it listens on 127.0.0.1 and reaches people through the hub's MLflow
service (:mod:`medimg_hub.mlflow_proxy`) at ``/services/mlflow``. The server answers below that
same path (``--static-prefix``, no trailing slash), so the proxy forwards paths unchanged, and it
accepts only the Host headers people use for the hub (``--allowed-hosts``).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import requests

from .process import ManagedProcess
from .settings import MLFLOW_PREFIX, Settings


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
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
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
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if not self.settings.mlflow.backend_store_uri:  # the default SQLite store under mlruns/
            store = self.settings.base_dir / "mlruns"
            store.mkdir(exist_ok=True)
            os.chmod(store, 0o700)  # users' kernels reach MLflow through its server, never its files

    def stop(self) -> bool:
        return self.process.stop()
