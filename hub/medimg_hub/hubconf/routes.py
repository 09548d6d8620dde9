"""Where users' kernels reach the platform's services (``MEDIMG_DICOMWEB_URL``, ``MEDIMG_PLATFORM_URL``).

Kernels call the platform API on its own port, not through the hub's proxy: the API
authenticates every request with the kernel's hub token itself (and audits it), so the proxy
adds no protection on this path, only cost. Measured (``benchmarks/bench_gateway.py``): a
105 MB series through configurable-http-proxy runs at about half the speed of the service's own
port, and the proxy's log would hold the UIDs in each URL. People's browsers still use the
hub's public URL.
"""

from __future__ import annotations

from medimg_hub.hubconf.roles import PLATFORM_SERVICE
from medimg_hub.settings import Settings

#: Address the managed services listen on (one machine: loopback).
SERVICE_HOST = "127.0.0.1"


def platform_api_url(settings: Settings) -> str:
    """The platform API's root as kernels reach it, e.g. ``http://127.0.0.1:8090/services/platform``."""
    return f"http://{SERVICE_HOST}:{settings.hub.platform_api_port}/services/{PLATFORM_SERVICE}"


def kernel_environment(settings: Settings) -> dict[str, str]:
    """The platform URLs every user's server (and so every kernel) gets in its environment."""
    root = platform_api_url(settings)
    return {"MEDIMG_DICOMWEB_URL": f"{root}/dicom-web", "MEDIMG_PLATFORM_URL": root,
            # Voila servers (medimg_voila.app) shut down a closed page's kernel after this
            "MEDIMG_DASHBOARD_KERNEL_IDLE_S": str(int(settings.review.dashboard_kernel_idle_s))}
