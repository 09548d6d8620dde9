"""The coordinator's ServerApp: FedAvg (or FedProx, optionally with DP), tracked in MLflow, registered.

Per round the strategy's own ``configure_*``/``aggregate_*`` are wrapped (not copied) to
record which sites were asked, which replied and why the others did not; the global model
is checkpointed through ``evaluate_fn``; the final model is registered under the name the
pipelines load (``organ-segmentation``) with the run config's alias.

One message per site and round: round r's train message asks the site to evaluate the model it
receives (round r−1's global model) on its hold-out before training, and the reply carries both;
that evaluation is logged at step r−1. Only after the last round is a separate evaluate message
sent (the final model's evaluation, step ``num-server-rounds``). So MLflow gets the same
``eval_*`` metrics per round and site as with Flower's train-then-evaluate rounds, with half the
messages (each costs a ClientApp process, polling on both sides and a copy of the weights each way).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping, DifferentialPrivacyServerSideFixedClipping, FedAvg, FedProx,
    Strategy,
)

from medimg_kernel.errors import ConfigurationError

from .config import RunSettings
from .records import EVALUATE_FIRST, EVALUATION_RECORD, from_record, split_replies
from .task import FederatedTracker, initial_arrays, segmentation_config

logger = logging.getLogger(__name__)

app = ServerApp()

#: Seconds between pulls for replies (Flower 1.41's deployed Grid sleeps 3 s between pulls).
REPLY_POLL_S = 0.25


class PromptGrid(Grid):
    """Flower's Grid, collecting replies every :data:`REPLY_POLL_S` seconds instead of every 3 s."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + (timeout or 0.0)
        replies: list[Message] = []
        while waiting and (timeout is None or time.monotonic() < deadline):
            found = list(self.grid.pull_messages(waiting))
            replies += found
            waiting -= {m.metadata.reply_to_message_id for m in found}
            if waiting:
                time.sleep(REPLY_POLL_S)
        return replies


def evaluation_reply(reply: Message) -> Message | None:
    """The evaluation a train reply carries, as an evaluate reply (error replies unchanged); None
    when the site sent no evaluation."""
    if reply.has_error():
        return reply
    if EVALUATION_RECORD not in reply.content.config_records:
        return None
    view = copy.copy(reply)  # same metadata (source node, reply-to); content of its own
    view.content = RecordDict({"metrics": MetricRecord(dict(reply.content[EVALUATION_RECORD])),
                               "site": reply.content.config_records["site"]})
    return view


class TrackedMixin:
    """Adds MLflow tracking of sent, replied and failed sites to a FedAvg-family strategy, and
    folds each round's evaluation into the next round's train message (module docstring)."""

    tracker: FederatedTracker
    site_of_node: dict[int, str]
    num_rounds: int
    _sent: set[int]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        config = ConfigRecord({**config, EVALUATE_FIRST: server_round > 1})
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        self._sent = {m.metadata.dst_node_id for m in messages}
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if server_round < self.num_rounds:  # evaluated by the next round's train message
            self._sent = set()
            return []
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))  # type: ignore[misc]
        self._sent = {m.metadata.dst_node_id for m in messages}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):  # noqa: ANN201
        replies = list(replies)
        if server_round > 1:
            evaluations = [e for e in map(evaluation_reply, replies) if e is not None]
            self._log_evaluation(server_round - 1, evaluations)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        per_site, failed = split_replies(replies, self._sent, self.site_of_node)
        self.tracker.log_round(server_round, "train", dict(metrics or {}), per_site, failed)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        if not replies and not self._sent:
            return None  # a round whose evaluation travels with the next train message
        return self._log_evaluation(server_round, replies)

    def _log_evaluation(self, server_round: int, replies: list[Message]) -> MetricRecord | None:
        metrics = super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]
        per_site, failed = split_replies(replies, self._sent, self.site_of_node)
        self.tracker.log_round(server_round, "eval", dict(metrics or {}), per_site, failed)
        return metrics


class TrackedFedAvg(TrackedMixin, FedAvg):
    """FedAvg weighted by ``num-examples``, tracked."""


class TrackedFedProx(TrackedMixin, FedProx):
    """FedProx (sends ``proximal-mu``; sites add the proximal term), tracked."""


def build_strategy(settings: RunSettings, tracker: FederatedTracker) -> Strategy:
    """The run config's strategy, wrapped in a DP fixed-clipping strategy when ``dp`` is set."""
    common = {"fraction_train": settings.fraction, "fraction_evaluate": settings.fraction,
              "min_train_nodes": settings.min_nodes,
              "min_evaluate_nodes": settings.min_nodes, "min_available_nodes": settings.min_nodes}
    inner: TrackedMixin
    if settings.strategy == "fedprox":
        inner = TrackedFedProx(proximal_mu=settings.proximal_mu, **common)
    else:
        inner = TrackedFedAvg(**common)
    inner.tracker, inner.site_of_node, inner._sent = tracker, {}, set()
    inner.num_rounds = settings.num_server_rounds
    if settings.dp == "server":
        return DifferentialPrivacyServerSideFixedClipping(inner, settings.dp_noise_multiplier,  # type: ignore[arg-type]
                                                          settings.dp_clipping_norm, settings.expected_nodes)
    if settings.dp == "client":
        return DifferentialPrivacyClientSideFixedClipping(inner, settings.dp_noise_multiplier,  # type: ignore[arg-type]
                                                          settings.dp_clipping_norm, settings.expected_nodes)
    return inner  # type: ignore[return-value]


def run_federation(grid: Grid, settings: RunSettings) -> None:
    """The whole run: parent MLflow run, ``num-server-rounds`` rounds, checkpoints, registration."""
    if not settings.tracking_uri:
        raise ConfigurationError("run config tracking-uri is empty: give the MLflow server's URL or "
                                 "sqlite:///path/to/mlflow.db (medimg fl run sets it from the platform settings)")
    tracker = FederatedTracker(settings.tracking_uri, settings.experiment, settings.run_name or None)
    tracker.start(settings.as_run_config())
    strategy = build_strategy(settings, tracker)

    def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round > 0:
            tracker.checkpoint(server_round, from_record(arrays))
        return None

    try:
        result = strategy.start(grid=grid, initial_arrays=initial_arrays(settings),
                                num_rounds=settings.num_server_rounds, timeout=settings.round_timeout,
                                evaluate_fn=checkpoint)
        if not tracker.sites:
            raise RuntimeError("no site returned weights in any round; nothing to register "
                               f"(see failures.txt of MLflow run {tracker.run_id})")
        if settings.register:
            tracker.register(from_record(result.arrays), segmentation_config(settings),
                             model_name=settings.model_name, alias=settings.alias or None,
                             rounds=settings.num_server_rounds, strategy=settings.strategy + f"+dp={settings.dp}")
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point: run config → :func:`run_federation`."""
    run_federation(PromptGrid(grid), RunSettings.from_run_config(context.run_config))
