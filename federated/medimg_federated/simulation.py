"""Simulation mode: the same Flower app, every site in this process, no SuperLink or SuperNodes.

Flower's own simulation runtime (``flwr run`` on a simulation federation, ``run_simulation``)
needs Ray, which is not installed here (and not in ``requirements.lock``). :class:`InProcessGrid`
implements Flower's :class:`~flwr.serverapp.Grid` by calling the app's ``ClientApp``
directly, once per site and message, so the ServerApp, strategies, DP wrappers, ClientApp
mods and MLflow tracking run unchanged — only the transport differs. Sites are served in
turn (no parallelism, no per-message process: data and imports are reused between rounds),
which is what makes it quick for experiments; deployment behaviour (timeouts, lost nodes,
TLS, authentication) needs the platform's deployment (``medimg fl up``/``medimg fl run``).

Part of the app package (it drives the app's own ``ServerApp`` and ``ClientApp``); notebooks and
benchmarks import it as ``medimg_federated.simulation`` with ``federated/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from medimg_kernel.errors import ConfigurationError

from .config import resolve

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class SimulatedSite:
    """One simulated SuperNode: its node id and node config (``site``, ``folder`` or ``dicomweb-url``)."""

    node_id: int
    node_config: Mapping[str, str]


class InProcessGrid(Grid):
    """A Flower Grid whose nodes are ClientApp calls in this process.

    Parameters
    ----------
    client_app
        The app's ``ClientApp``.
    sites
        The simulated nodes.
    run_config
        The run config every node sees.
    """

    def __init__(self, client_app: Any, sites: Sequence[SimulatedSite], run_config: Mapping[str, Any]) -> None:
        self.client_app = client_app
        self.sites = {s.node_id: s for s in sites}
        self.contexts = {s.node_id: Context(run_id=1, node_id=s.node_id, node_config=dict(s.node_config),
                                            state=RecordDict(), run_config=dict(run_config)) for s in sites}
        self._run = Run.create_empty(1)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            node = message.metadata.dst_node_id
            started = time.perf_counter()
            reply = self.client_app(message, self.contexts[node])
            logger.debug("node %d answered %s in %.2f s", node, message.metadata.message_type,
                         time.perf_counter() - started)
            reply.metadata.__dict__["_src_node_id"] = node
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def load_app() -> tuple[Any, Any]:
    """The app's ``(server_app.app, client_app.app)``."""
    from .client_app import app as client_app
    from .server_app import app as server_app

    return server_app, client_app


def folder_sites(folder: Path) -> list[dict[str, str]]:
    """Node configs for a folder holding one subfolder of DICOM files per site (as the demo writes).

    Raises
    ------
    ConfigurationError
        ``folder`` is not a folder, or holds no site subfolder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigurationError(f"sites folder {folder} is not a folder: give one subfolder of DICOM files per "
                                 "site (`medimg up` writes the demo sites to var/demo; "
                                 "medimg_kernel.phantom.generate_demo makes them anywhere)")
    sites = [{"site": p.name, "folder": str(p)} for p in sorted(folder.iterdir()) if p.is_dir()]
    if not sites:
        raise ConfigurationError(f"sites folder {folder} holds no site subfolder")
    return sites


def simulate(sites: Sequence[Mapping[str, str]], run_config: Mapping[str, Any]) -> None:
    """Run the federated app on ``sites`` (node configs) in this process.

    Parameters
    ----------
    sites
        One node config per site: ``{"site": name, "folder": path}`` or with ``dicomweb-url``
        and ``credentials-file``.
    run_config
        Overrides of the app's run config (keys of ``[tool.flwr.app.config]``, e.g.
        ``num-server-rounds``, ``tracking-uri``).

    Raises
    ------
    ConfigurationError
        An unknown run-config key (named), or a value of the wrong type.
    """
    config = resolve(run_config)
    server_app, client_app = load_app()
    grid = InProcessGrid(client_app, [SimulatedSite(i + 1, s) for i, s in enumerate(sites)], config)
    # What the ServerApp process of a deployment gets from its SuperLink (messages need it).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    context = Context(run_id=1, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config=config)
    server_app(grid, context)


__all__ = ["SimulatedSite", "InProcessGrid", "load_app", "folder_sites", "simulate"]
