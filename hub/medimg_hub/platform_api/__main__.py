"""``python -m medimg_hub.platform_api --config FILE``: run the platform API (a JupyterHub-managed service).

Listens on ``JUPYTERHUB_SERVICE_URL`` when JupyterHub starts it, else on
127.0.0.1:``[hub] platform_api_port``. SIGTERM/SIGINT stop it after the pending audit records are written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import urlparse

from medimg_hub.platform_api.app import build_context, make_app
from medimg_hub.platform_api.base import PlatformContext
from medimg_hub.servers.runner import run_service, stop_requested
from medimg_hub.settings import load_settings

log = logging.getLogger("medimg_hub.platform_api")


def _address(env: dict[str, str], default_port: int) -> tuple[str, int]:
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parsed = urlparse(url)
        return parsed.hostname or "127.0.0.1", parsed.port or default_port
    return "127.0.0.1", default_port


def rule_loop(context: PlatformContext) -> asyncio.Task[None]:
    """Apply the datasets' saved rules to unassigned studies every ``[platform] dataset_rules_interval_s``."""
    interval = context.settings.platform.dataset_rules_interval_s

    async def loop() -> None:
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                joined = await context.run(context.datasets.apply_rules)
            except Exception:  # noqa: BLE001 - a database or PACS hiccup: try again next time
                log.warning("dataset rules could not be applied", exc_info=True)
                continue
            if joined:
                log.info("dataset rules: %d arriving studies joined their datasets", joined)

    return asyncio.ensure_future(loop())


async def serve(config: str | None) -> None:
    """Build the service, listen, and run until SIGTERM or SIGINT."""
    settings = load_settings(config)
    env = dict(os.environ)
    context = build_context(settings, env)
    host, port = _address(env, settings.hub.platform_api_port)
    server = make_app(context).listen(port, address=host, xheaders=False)
    log.info("platform API listening on %s:%d, prefix %s", host, port, context.prefix)
    rules = rule_loop(context)
    await stop_requested()
    rules.cancel()
    server.stop()
    await context.orthanc.close()
    context.audit_executor.shutdown(wait=True)  # every pending audit record written
    context.executor.shutdown(wait=False, cancel_futures=True)
    log.info("platform API stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service("python -m medimg_hub.platform_api", __doc__ or "", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
