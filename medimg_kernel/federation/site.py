"""What one federated site does, without Flower: open its own PACS, train and evaluate locally.

The Flower ClientApp (``federated/client_app.py``) is a thin adapter over this module, so the
site's work is the same code as centralised training (:mod:`medimg_kernel.training`): the
same training pairs (:func:`~medimg_kernel.datasets.load_training_pairs`: image series plus
the newest *finalised* SEG, never a ``model_`` SEG), the same epoch loop
(:func:`~medimg_kernel.training.train_epochs`) and the same Dice
(:func:`~medimg_kernel.training.validate`).

How weights travel between the server and the sites is in :mod:`medimg_kernel.federation.weights`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import torch

from .. import dicom_json
from ..client import connect
from ..datasets import TrainingPair, load_training_pairs, split_holdout
from ..dicomweb import DICOMwebProtocol
from ..errors import ConfigurationError, MedImgError
from ..model import SegmentationModelConfig, select_device
from ..training import model_grid_items, train_epochs, validate

logger = logging.getLogger(__name__)


class NoTrainingDataError(MedImgError, LookupError):
    """The site has no study with a finalised SEG: it cannot train (the reason names why)."""


@dataclass(frozen=True)
class SiteConfig:
    """Where one site's images are, from the SuperNode's node config.

    Attributes
    ----------
    site
        The site's name (MLflow metric prefix; never a patient identifier).
    dicomweb_url
        The site's own DICOMweb root (its PACS), or ``""`` when ``folder`` is used.
    credentials_file
        JSON file ``{"username": ..., "password": ...}`` (mode 0600) for HTTP basic auth on
        ``dicomweb_url``; ``""``: no auth. Passwords never go on a command line.
    folder
        A local folder of DICOM files instead of a PACS.
    qido_filter
        ``"KEY=VALUE[,KEY=VALUE]"``: only studies with a series matching this QIDO-RS query
        (e.g. ``InstitutionName=...`` when several sites share one PACS, as the one-machine demo
        does); ``""``: every study the client sees.
    """

    site: str
    dicomweb_url: str = ""
    credentials_file: str = ""
    folder: str = ""
    qido_filter: str = ""

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> SiteConfig:
        """Read ``site``, ``dicomweb-url``, ``credentials-file``, ``folder`` (Flower node config keys)."""
        found = cls(str(node_config.get("site", "")), str(node_config.get("dicomweb-url", "")),
                    str(node_config.get("credentials-file", "")), str(node_config.get("folder", "")),
                    str(node_config.get("qido-filter", "")))
        if not found.site or bool(found.dicomweb_url) == bool(found.folder):
            raise ConfigurationError(
                "node config needs site=NAME and exactly one of dicomweb-url=URL or folder=PATH; got "
                f"site={found.site!r}, dicomweb-url={found.dicomweb_url!r}, folder={found.folder!r}")
        return found

    def study_instance_uids(self, client: DICOMwebProtocol) -> list[str] | None:
        """The site's studies under ``qido_filter`` (``None``: no filter, every study)."""
        if not self.qido_filter:
            return None
        filters = dict(part.split("=", 1) for part in self.qido_filter.split(",") if "=" in part)
        # Matched here, not by the server: Orthanc 1.10 answers 0 series to a filter on a tag it does
        # not index (InstitutionName) and to PatientID wildcards, but returns such tags as fields.
        found = client.search_for_series(fields=[_tag(k) for k in filters])
        return list(dict.fromkeys(str(s["0020000D"]["Value"][0]) for s in found
                                  if "0020000D" in s and _matches(s, filters)))

    def open_client(self) -> DICOMwebProtocol:
        """A DICOMweb client on the site's own PACS or folder."""
        if self.folder:
            return connect(self.folder)
        session = requests.Session()
        if self.credentials_file:
            raw = json.loads(Path(self.credentials_file).read_text())
            session.auth = (raw["username"], raw["password"])
        return connect(self.dicomweb_url, session=session)


def _tag(keyword: str) -> str:
    """``"InstitutionName"`` → ``"00080080"`` (a tag given as 8 hex digits is kept)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        if len(keyword) == 8 and all(c in "0123456789abcdefABCDEF" for c in keyword):
            return keyword.upper()
        raise ConfigurationError(f"qido-filter: {keyword!r} is not a DICOM keyword")
    return f"{tag:08X}"


def _matches(series: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    """Whether a QIDO series answer has every filtered attribute, as value or ``*``/``?`` pattern."""
    for keyword, pattern in filters.items():
        if not any(fnmatch.fnmatchcase(str(v), pattern) for v in dicom_json.values(series, _tag(keyword))):
            return False
    return True


@dataclass(frozen=True)
class SiteData:
    """A site's training and hold-out pairs, and the studies it skipped (with reasons)."""

    site: str
    train: tuple[TrainingPair, ...]
    holdout: tuple[TrainingPair, ...]
    skipped: tuple[str, ...]

    def require_train(self) -> None:
        """Raise :class:`NoTrainingDataError` naming the reason when there is nothing to train on."""
        if not self.train:
            held = (f"its {len(self.holdout)} labelled studies are all held out for evaluation (holdout-fraction): "
                    "a site needs two or more") if self.holdout else ""
            reasons = "; ".join([*([held] if held else []), *self.skipped[:3]]) or "no studies at all"
            raise NoTrainingDataError(f"site {self.site}: no training pairs ({reasons}); "
                                      "finalise ('organs') SEGs in the site's PACS to take part")


_CACHE: dict[tuple[SiteConfig, str, tuple[str, ...], float], SiteData] = {}


def load_site_data(site: SiteConfig, config: SegmentationModelConfig, *, type_id: str = "organs",
                   holdout_fraction: float = 0.2) -> SiteData:
    """The site's pairs from its own PACS, split into train and a local hold-out by StudyInstanceUID.

    With a single study there is no hold-out: the training study is evaluated instead (the
    evaluate message still reports, flagged by ``holdout_is_train``). Cached per process.
    """
    key = (site, type_id, config.label_names, holdout_fraction)
    if key in _CACHE:
        return _CACHE[key]
    client = site.open_client()
    data = load_training_pairs(client, site.study_instance_uids(client), type_id=type_id,
                               label_names=config.label_names)
    train, held = split_holdout(list(data.pairs), holdout_fraction)
    skipped = tuple(f"{s.study_instance_uid}: {s.reason}" for s in data.skipped)
    found = SiteData(site.site, tuple(train), tuple(held), skipped)
    logger.info("site %s: %d training and %d hold-out series, %d studies skipped", site.site, len(train),
                len(held), len(skipped))
    _CACHE[key] = found
    return found


def clear_site_cache() -> None:
    """Forget every site's cached pairs and resampled items (a long-lived worker, at a new run)."""
    _CACHE.clear()
    _ITEMS.clear()


# --- local work -----------------------------------------------------------------------------------


#: Model-grid training items by (SiteData id, config): SiteData objects live in ``_CACHE``.
_ITEMS: dict[tuple[int, str], list[dict[str, np.ndarray]]] = {}


def round_learning_rate(lr: float, server_round: int, num_rounds: int) -> float:
    """Cosine schedule over rounds: ``lr`` in round 1, decaying towards 0 by the last round."""
    if num_rounds <= 1 or server_round < 1:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (server_round - 1) / num_rounds))


def local_train(network: torch.nn.Module, data: SiteData, config: SegmentationModelConfig, *, epochs: int,
                batch_size: int = 2, lr: float = 3e-3, seed: int = 0, proximal_mu: float = 0.0,
                num_threads: int | None = None) -> dict[str, float]:
    """Train ``network`` in place on the site's training pairs at a constant ``lr``; the reply's metrics.

    Returns
    -------
    dict
        ``num-examples`` (training series), ``loss`` (last epoch's mean), ``time-s``.
    """
    data.require_train()
    key = (id(data), config.to_json())
    if key not in _ITEMS:  # resample once per process (simulation mode reuses it every round)
        _ITEMS[key] = model_grid_items(data.train, config)
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    start = time.perf_counter()
    try:
        history = train_epochs(network, data.train, config, epochs=epochs, batch_size=batch_size, lr=lr,
                               device=select_device(), seed=seed, proximal_mu=proximal_mu, constant_lr=True,
                               items=_ITEMS[key])
    finally:
        torch.set_num_threads(previous)
    return {"num-examples": float(len(data.train)), "loss": history[-1]["loss"],
            "time-s": time.perf_counter() - start}


def local_evaluate(network: torch.nn.Module, data: SiteData, config: SegmentationModelConfig) -> dict[str, float]:
    """Dice per organ of ``network`` on the site's hold-out (its training series when it has none).

    Returns
    -------
    dict
        ``num-examples``, ``dice`` (mean over organs), ``dice-<organ>``, ``holdout-is-train`` (0/1),
        ``time-s``.
    """
    pairs: Sequence[TrainingPair] = data.holdout or data.train
    if not pairs:
        data.require_train()
    start = time.perf_counter()
    scores = validate(network, pairs, config, select_device())
    return {"num-examples": float(len(pairs)), "dice": float(np.mean(list(scores.values()))),
            **{f"dice-{name}": value for name, value in scores.items()},
            "holdout-is-train": float(not data.holdout), "time-s": time.perf_counter() - start}


__all__ = ["NoTrainingDataError", "SiteConfig", "SiteData", "load_site_data", "clear_site_cache",
           "round_learning_rate", "local_train", "local_evaluate"]
