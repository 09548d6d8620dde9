"""What the app's modules share: message keys, the site's work as plain values, weights as records.

The ClientApp, the site worker, the site's work (:mod:`.task`) and the ServerApp all speak these;
this module imports only Flower's record types, numpy and the standard library (no torch), so the
ClientApp process that forwards to a site worker stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

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
        return cls(train, from_record(record), dict(sent), context.run_id,
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
            content["arrays"] = to_record(self.arrays)
        if self.evaluation is not None:
            content[EVALUATION_RECORD] = ConfigRecord(dict(self.evaluation))
        return Message(content=content, reply_to=message)


# --- weights as Flower records ------------------------------------------------------------------


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays as an ArrayRecord (names kept, order kept)."""
    return ArrayRecord(array_dict={name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord as named numpy arrays."""
    return {name: array.numpy() for name, array in record.items()}


# --- replies, ServerApp side ----------------------------------------------------------------------


def reply_site(message: Message) -> str:
    """The site name a reply carries ("" for error replies)."""
    if message.has_error() or "site" not in message.content.config_records:
        return ""
    return str(message.content.config_records["site"]["site"])


def split_replies(replies: Iterable[Message], sent: Iterable[int], sites: dict[int, str]
                  ) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per-site metrics of valid replies, and ``{site or node: reason}`` for errors and missing replies.

    ``sites`` (node id → site name) is updated from the valid replies.
    """
    per_site: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    seen = set()
    for reply in replies:
        node = reply.metadata.src_node_id
        seen.add(node)
        if reply.has_error():
            reason = reply.error.reason or f"error code {reply.error.code}"
            failed[sites.get(node) or _site_in(reason) or f"node-{node}"] = reason
            continue
        sites[node] = reply_site(reply) or f"node-{node}"
        metrics = next(iter(reply.content.metric_records.values()))
        per_site[sites[node]] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    for node in set(sent) - seen:
        failed[sites.get(node, f"node-{node}")] = "no reply before the round timeout (site down or too slow)"
    return per_site, failed


def _site_in(reason: str) -> str:
    """The site name in a refusal reason (``"site NAME: ..."``), if any."""
    if reason.startswith("site ") and ":" in reason:
        return reason[5:].split(":", 1)[0].strip()
    return ""


__all__ = ["EVALUATE_FIRST", "EVALUATION_RECORD", "WorkRequest", "SiteReply", "to_record", "from_record",
           "reply_site", "split_replies"]
