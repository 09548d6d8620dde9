"""JupyterHub (with its configurable-http-proxy) as a platform service started by ``medimg up``.

``jupyterhub -f hub/jupyterhub_config.py`` runs with the settings file in ``MEDIMG_CONFIG``; the
hub starts and stops the proxy, the platform API service and users' servers itself. Spawner
"system-users" needs root (OS accounts, setuid).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import requests

from medimg_hub.hubconf.state import HubState
from medimg_hub.servers.process import ManagedProcess, ServiceError
from medimg_hub.settings import CONFIG_ENV_VAR, REPO_ROOT, Settings

log = logging.getLogger(__name__)

#: The hub's configuration file.
CONFIG_FILE = REPO_ROOT / "hub" / "jupyterhub_config.py"


class JupyterHubServer:
    """Start, stop and probe the platform's JupyterHub.

    Parameters
    ----------
    settings
        Platform settings; ``[hub]`` and ``[platform]`` are used.
    """

    name = "hub"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = HubState.for_settings(settings)
        self.url = f"http://127.0.0.1:{settings.hub.port}"
        executable = str(Path(sys.executable).parent / "jupyterhub")
        env = {**os.environ, CONFIG_ENV_VAR: str(self.state.settings_file),
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "hub")])}
        self.process = ManagedProcess(
            "jupyterhub",
            [executable, "-f", str(CONFIG_FILE)],
            settings.var_dir,
            ready=self.is_ready,
            url=f"{self.url}/hub/",
            env=env,
        )

    def is_ready(self) -> bool:
        """Whether the hub answers through the proxy."""
        try:
            response = requests.get(f"{self.url}/hub/api/", timeout=2)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def start(self) -> bool:
        """Start the hub unless it runs; True if started now."""
        hub = self.settings.hub
        if hub.spawner == "system-users" and os.geteuid() != 0 and self.process.pid() is None:
            raise ServiceError("[hub] spawner = 'system-users' runs users' servers as their own OS accounts and "
                               "needs root: run `medimg up` as root, or set spawner = 'shared' for development")
        ports = [(f"[hub] {key}", port) for key, port in (("port", hub.port), ("api_port", hub.api_port),
                                                          ("proxy_api_port", hub.proxy_api_port))]
        return self.process.start(max(self.settings.platform.start_timeout_s, 60.0), ports=ports)

    def stop(self) -> bool:
        """Stop the hub (it stops the proxy, services and users' servers first); True if it ran."""
        return self.process.stop(timeout_s=30.0)
