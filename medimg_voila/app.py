"""The Voila-only single-user server of clinicians and directors (DESIGN.md §3).

Run by the spawner as ``python -m medimg_voila.app DASHBOARD.ipynb``. It is standalone Voila,
not a Jupyter server with JupyterLab turned off: there is no JupyterLab, no terminals, no contents
API and no kernels API; the only notebook it runs is the one it was started with, and the kernel
websocket passes comm and kernel-info messages only (Voila's own filter), so a browser cannot
send code to execute.

Authentication is JupyterHub's OAuth, through :class:`HubIdentityProvider`: Voila 0.5 registers
an identity provider's handlers (``/oauth_callback``, ``/logout``) without the server's prefix,
so the subclass adds ``/user/<name>/``. Everything else comes from the environment the spawner
sets (``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_SERVICE_PREFIX``, the API token, the OAuth client).
Pages use the offline ``medimg`` template (:mod:`medimg_voila.templates`): no request leaves
the hub. A kernel whose page is gone is shut down after ``MEDIMG_DASHBOARD_KERNEL_IDLE_S``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from jupyter_server.utils import url_path_join
from jupyterhub.singleuser.extension import JupyterHubAuthorizer, JupyterHubIdentityProvider
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

log = logging.getLogger(__name__)


class HubIdentityProvider(JupyterHubIdentityProvider):
    """JupyterHub's identity provider with its handlers under this server's prefix."""

    @property
    def token(self) -> str:
        """The server's hub API token (read-only; Voila tries to set an empty one)."""
        return self.hub_auth.api_token

    @token.setter
    def token(self, value: str) -> None:
        """Ignore Voila's token: the hub's OAuth is the only way in."""

    def get_handlers(self) -> list[tuple[Any, ...]]:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        return [(url_path_join(prefix, path), *rest) for path, *rest in super().get_handlers()]


class HubVoila(Voila):
    """Voila behind JupyterHub: hub OAuth, address and prefix from the spawner, one notebook only."""

    def initialize(self, argv: Sequence[str] | None = None) -> None:
        super().initialize(argv)
        if not self.notebook_path:
            raise SystemExit("medimg_voila.app serves exactly one notebook: pass its path")
        # Set after the command line and config files, so nothing can loosen these.
        service_url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8866"))
        self.ip = service_url.hostname or "127.0.0.1"
        self.port = service_url.port or 8866
        self.port_retries = 0
        self.base_url = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        self.open_browser = False
        self.identity_provider_class = HubIdentityProvider
        self.authorizer_class = JupyterHubAuthorizer
        self.tornado_settings = {"headers": {"Content-Security-Policy": "frame-ancestors 'self'"}}
        self.voila_configuration.show_tracebacks = False
        # Each page load runs the dashboard in a kernel of its own; a kernel whose page was closed or
        # reloaded (no connection, not busy) is shut down after MEDIMG_DASHBOARD_KERNEL_IDLE_S seconds
        # ([review] dashboard_kernel_idle_s): jupyter_server's culler, which Voila's kernel manager has.
        idle_s = max(5, int(float(os.environ.get("MEDIMG_DASHBOARD_KERNEL_IDLE_S", "120"))))
        self.config.MappingKernelManager.cull_idle_timeout = idle_s
        self.config.MappingKernelManager.cull_interval = max(5, idle_s // 5)
        self.config.MappingKernelManager.cull_connected = False
        self.config.MappingKernelManager.cull_busy = False

    def init_handlers(self) -> list[Any]:
        """Voila's handlers, with the notebook served at the prefix itself and nowhere else.

        Voila's single-notebook mode renders its notebook for *every* path under the prefix
        (``/user/<name>/lab`` included); here other paths answer 404.
        """
        handlers = super().init_handlers()
        catch_all = url_path_join(self.server_url, r"/(.*)")
        return [((url_path_join(self.server_url, "/") + "()", *rest) if pattern == catch_all
                 and rest and rest[0] is TornadoVoilaHandler else (pattern, *rest))
                for pattern, *rest in handlers]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``python -m medimg_voila.app NOTEBOOK``, rendered with the offline ``medimg`` template.

    Voila finds templates only through ``JUPYTER_PATH`` (:mod:`medimg_voila.templates`), so
    it is set here, before Voila computes its paths.
    """
    from medimg_voila.templates import TEMPLATE_NAME, jupyter_path_env

    os.environ["JUPYTER_PATH"] = jupyter_path_env(os.environ.get("JUPYTER_PATH"))
    args = list(argv) if argv is not None else sys.argv[1:]
    HubVoila.launch_instance(argv=[f"--template={TEMPLATE_NAME}", *args])


if __name__ == "__main__":
    main()
