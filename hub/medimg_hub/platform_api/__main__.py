"""``python -m medimg_hub.platform_api --config FILE``: run the platform API (a JupyterHub-managed service).

Listens on ``JUPYTERHUB_SERVICE_URL`` when JupyterHub starts it, else on
127.0.0.1:``[hub] platform_api_port``. SIGTERM/SIGINT stop it after the pending audit records are written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from urllib.parse import urlparse

from ..settings import load_settings
from .app import build_context, make_app

log = logging.getLogger("medimg_hub.platform_api")


def _address(env: dict[str, str], default_port: int) -> tuple[str, int]:
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parsed = urlparse(url)
        return parsed.hostname or "127.0.0.1", parsed.port or default_port
    return "127.0.0.1", default_port


async def serve(config: str | None) -> None:
    """Build the service, listen, and run until SIGTERM or SIGINT."""
    settings = load_settings(config)
    env = dict(os.environ)
    context = build_context(settings, env)
    host, port = _address(env, settings.hub.platform_api_port)
    server = make_app(context).listen(port, address=host, xheaders=False)
    log.info("platform API listening on %s:%d, prefix %s", host, port, context.prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await context.orthanc.close()
    context.audit_executor.shutdown(wait=True)  # every pending audit record written
    context.executor.shutdown(wait=False, cancel_futures=True)
    log.info("platform API stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medimg_hub.platform_api", description=__doc__)
    parser.add_argument("--config", help="settings file (default: medimg.toml or $MEDIMG_CONFIG)",
                        default=os.environ.get("MEDIMG_CONFIG"))
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
