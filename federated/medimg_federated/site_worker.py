"""A site's warm worker: the ClientApp's work in one long-running process per site.

Flower 1.41 starts a fresh ClientApp process for every message (``flwr-clientapp`` serves one
task and exits), so every train and evaluate message used to pay the torch + MONAI imports
(~5 s) and re-read the site's studies from its PACS. When a SuperNode's node config names a
worker (``worker-socket``, ``worker-key-file``), the ClientApp imports only this module and
forwards the message over a Unix socket (in a 0700 folder, connections authenticated with the
key in a 0600 file); the worker keeps the imports, and the site's training pairs for the
current run, in memory. Without a worker the ClientApp does the work itself (simulation mode).

This module imports only Flower's record types, numpy and the standard library; the worker
imports :mod:`.task` when it starts. Run a worker with ``federated/`` on ``PYTHONPATH``:
``python -m medimg_federated.site_worker --socket PATH --key-file PATH`` (the platform's
``medimg fl up`` does).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

logger = logging.getLogger(__name__)

#: Error code of a reply the worker could not produce (an unexpected exception; see its log).
WORKER_FAILED = 1004
#: Train-config key: evaluate the received global model on the hold-out before training.
EVALUATE_FIRST = "evaluate-first"
#: Reply record (a ConfigRecord, so Flower's aggregation still sees one MetricRecord) holding that
#: evaluation in a train reply.
EVALUATION_RECORD = "evaluation"


@dataclass(frozen=True)
class WorkRequest:
    """One train or evaluate message, as plain values (what crosses the socket)."""

    train: bool
    arrays: dict[str, np.ndarray]
    sent_config: dict[str, Any]
    run_id: int
    node_id: int
    run_config: dict[str, Any]
    node_config: dict[str, Any]

    @classmethod
    def from_message(cls, message: Message, context: Context, *, train: bool) -> WorkRequest:
        record = next(iter(message.content.array_records.values()))
        sent = message.content.config_records.get("config", ConfigRecord())
        return cls(train, {name: array.numpy() for name, array in record.items()}, dict(sent), context.run_id,
                   context.node_id, dict(context.run_config), dict(context.node_config))


@dataclass(frozen=True)
class SiteReply:
    """A site's answer: metrics (and weights after training), or a refusal (``error_code`` > 0).

    ``evaluation``: in a train reply, the hold-out metrics of the *received* model (asked with
    :data:`EVALUATE_FIRST`), sent as the :data:`EVALUATION_RECORD` ConfigRecord.
    """

    site: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] | None = None
    evaluation: dict[str, float] | None = None
    error_code: int = 0
    error_reason: str = ""

    def to_message(self, message: Message) -> Message:
        """The Flower reply to ``message``."""
        if self.error_code:
            return Message(Error(code=self.error_code, reason=self.error_reason), reply_to=message)
        content = RecordDict({"metrics": MetricRecord(dict(self.metrics)), "site": ConfigRecord({"site": self.site})})
        if self.arrays is not None:
            content["arrays"] = ArrayRecord(
                array_dict={name: Array(np.ascontiguousarray(a)) for name, a in self.arrays.items()})
        if self.evaluation is not None:
            content[EVALUATION_RECORD] = ConfigRecord(dict(self.evaluation))
        return Message(content=content, reply_to=message)


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
    from medimg_kernel.federated import clear_site_cache

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
