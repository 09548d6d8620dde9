"""The federated app's work, delegated to :mod:`medimg_kernel` (the only module here that imports torch).

Run config (``[tool.flwr.app.config]`` in ``pyproject.toml``, override with ``flwr run -c``)
is read once into :class:`~.config.RunSettings`; node config (one per SuperNode: which PACS is
this site's) into :class:`medimg_kernel.federation.SiteConfig`.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ArrayRecord, Context, Message

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.federation import (
    ArchitectureMismatchError, NoTrainingDataError, SiteConfig, load_site_data, local_evaluate, local_train,
    network_from_arrays, round_learning_rate, state_arrays,
)
from medimg_kernel.federation import FederatedTracker
from medimg_kernel.model import SegmentationModelConfig, build_network

from .config import RunSettings
from .records import EVALUATE_FIRST, SiteReply, WorkRequest, to_record

logger = logging.getLogger(__name__)

#: Error codes of refusals (Flower ``Error.code``), above Flower's own codes.
NO_TRAINING_DATA = 1001
ARCHITECTURE_MISMATCH = 1002
CONFIGURATION = 1003

TINY_MODEL = ('{"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "roi_size": [16, 32, 32], '
              '"target_spacing_mm": [8.0, 8.0, 8.0], "sw_batch_size": 4}')


def segmentation_config(settings: RunSettings, override: str = "") -> SegmentationModelConfig:
    """The model config from ``model-config`` (or a node's ``override``), as JSON overrides."""
    text = override or settings.model_config
    return SegmentationModelConfig.from_json(text) if text else SegmentationModelConfig()


def initial_arrays(settings: RunSettings) -> ArrayRecord:
    """The seeded, untrained global model."""
    return to_record(state_arrays(build_network(segmentation_config(settings))))


# --- ClientApp side -------------------------------------------------------------------------------


def _site_work(request: WorkRequest) -> tuple[RunSettings, SiteConfig, SegmentationModelConfig, Any, Any]:
    settings = RunSettings.from_run_config(request.run_config)
    site = SiteConfig.from_node_config(request.node_config)
    config = segmentation_config(settings, str(request.node_config.get("model-config", "")))
    network = network_from_arrays(config, request.arrays, site=site.site)
    data = load_site_data(site, config, type_id=settings.type_id, holdout_fraction=settings.holdout_fraction)
    return settings, site, config, network, data


def _refusal(code: int, reason: str) -> SiteReply:
    logger.warning("%s", reason)
    return SiteReply(error_code=code, error_reason=reason)


def site_reply(request: WorkRequest) -> SiteReply:
    """Train (``request.train``) or evaluate the received global model on this site's own data.

    A train request whose config sets :data:`~.records.EVALUATE_FIRST` also evaluates the
    received model on the hold-out before training (one message per round instead of two).

    Refusals are error replies with a reason the ServerApp logs and tracks: a site without
    finalised labels (:data:`NO_TRAINING_DATA`), weights that don't fit the local network
    (:data:`ARCHITECTURE_MISMATCH`), a bad node or run config (:data:`CONFIGURATION`).
    """
    try:
        settings, site, config, network, data = _site_work(request)
        server_round = int(request.sent_config.get("server-round", 0))
        if not request.train:
            return SiteReply(site.site, local_evaluate(network, data, config))
        evaluation = local_evaluate(network, data, config) if request.sent_config.get(EVALUATE_FIRST) else None
        metrics = local_train(network, data, config, epochs=settings.local_epochs, batch_size=settings.batch_size,
                              lr=round_learning_rate(settings.lr, server_round, settings.num_server_rounds),
                              seed=settings.seed + 1000 * server_round + request.node_id % 997,
                              proximal_mu=float(request.sent_config.get("proximal-mu", 0.0)),
                              num_threads=settings.num_threads)
        return SiteReply(site.site, metrics, state_arrays(network), evaluation)
    except NoTrainingDataError as exc:
        return _refusal(NO_TRAINING_DATA, str(exc))
    except ArchitectureMismatchError as exc:
        return _refusal(ARCHITECTURE_MISMATCH, str(exc))
    except ConfigurationError as exc:
        return _refusal(CONFIGURATION, f"site configuration: {exc}")


def handle_message(message: Message, context: Context, *, train: bool) -> Message:
    """:func:`site_reply` for a Flower message, in this process (no site worker)."""
    return site_reply(WorkRequest.from_message(message, context, train=train)).to_message(message)


__all__ = ["FederatedTracker", "segmentation_config", "initial_arrays", "handle_message", "site_reply",
           "NO_TRAINING_DATA", "ARCHITECTURE_MISMATCH", "CONFIGURATION", "TINY_MODEL"]
