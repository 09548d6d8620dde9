"""What the platform's long-running Python services share: the command line, logs without UIDs, the stop signal.

The hub-managed services (:mod:`medimg_hub.platform_api`, :mod:`medimg_hub.tracking.proxy`) and the
federation's Fleet gateway each listen until SIGTERM or SIGINT, then shut down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence

from medimg_hub.servers.logs import install, key_file, load_key
from medimg_hub.settings import Settings, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact_logs(settings: Settings) -> None:
    """Pseudonymise DICOM UIDs in everything this process logs (:mod:`medimg_hub.servers.logs`)."""
    install(load_key(key_file(settings.var_dir)))


async def stop_requested() -> None:
    """Return when the process gets SIGTERM or SIGINT (call inside the running event loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_service(prog: str, description: str, serve: Callable[[str | None], Awaitable[None]],
                argv: Sequence[str] | None = None) -> int:
    """``python -m PROG [--config FILE] [--log-level LEVEL]``: set up logging and run ``serve(config)``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="settings file (default: medimg.toml or $MEDIMG_CONFIG)",
                        default=os.environ.get("MEDIMG_CONFIG"))
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    redact_logs(load_settings(args.config))
    asyncio.run(serve(args.config))
    return 0
