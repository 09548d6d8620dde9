"""A site's warm worker: the ClientApp's work in one long-running process per site.

Flower 1.41 starts a fresh ClientApp process for every message (``flwr-clientapp`` serves one
task and exits), so every train and evaluate message used to pay the torch + MONAI imports
(~5 s) and re-read the site's studies from its PACS. When a SuperNode's node config names a
worker (``worker-socket``, ``worker-key-file``), the ClientApp imports only this module and
forwards the message over a Unix socket (in a 0700 folder, connections authenticated with the
key in a 0600 file); the worker keeps the imports, and the site's training pairs for the
current run, in memory. Without a worker the ClientApp does the work itself (simulation mode).

This module imports only Flower's record types, numpy and the standard library (through
:mod:`.records`); the worker imports :mod:`.task` when it starts. Run a worker with ``federated/`` on ``PYTHONPATH``:
``python -m medimg_federated.site_worker --socket PATH --key-file PATH`` (the platform's
``medimg fl up`` does).
"""

from __future__ import annotations

import argparse
import logging
import os
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

from flwr.app import Context, Message

from .records import SiteReply, WorkRequest

logger = logging.getLogger(__name__)

#: Error code of a reply the worker could not produce (an unexpected exception; see its log).
WORKER_FAILED = 1004


def _address(node_config: dict[str, Any]) -> tuple[str, bytes]:
    key = Path(str(node_config["worker-key-file"])).read_bytes()
    return str(node_config["worker-socket"]), key


def forward(message: Message, context: Context, *, train: bool) -> Message:
    """Have the site's worker answer ``message``; the reply to send back."""
    address, key = _address(dict(context.node_config))
    with Client(address, family="AF_UNIX", authkey=key) as connection:
        connection.send(WorkRequest.from_message(message, context, train=train))
        reply: SiteReply = connection.recv()
    return reply.to_message(message)


def serve(socket: Path, key_file: Path) -> None:
    """Answer :class:`WorkRequest` objects on ``socket`` until terminated; the site's data is
    kept for the current run and dropped when a request of another run arrives."""
    from . import task  # torch, MONAI, medimg_kernel: once per worker
    from medimg_kernel.federation import clear_site_cache

    socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    current_run: int | None = None
    with Listener(str(socket), family="AF_UNIX", authkey=key_file.read_bytes()) as listener:
        os.chmod(socket, 0o600)
        logger.info("site worker ready on %s", socket)
        while True:
            with listener.accept() as connection:
                request: WorkRequest = connection.recv()
                if request.run_id != current_run:
                    clear_site_cache()
                    current_run = request.run_id
                try:
                    reply = task.site_reply(request)
                except Exception as exc:  # noqa: BLE001 - a process boundary: report, keep serving
                    logger.exception("site worker: request of run %s failed", request.run_id)
                    reply = SiteReply(error_code=WORKER_FAILED, error_reason=f"site worker: {type(exc).__name__}: {exc}")
                connection.send(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description="A federated site's warm worker (see the module docstring).")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(args.socket, args.key_file)


if __name__ == "__main__":
    main()
