"""Training pairs from a DICOMweb source: each image series with its newest finalised SEG.

A *finalised* SEG of type ``type_id`` is one whose SeriesDescription is exactly
``type_id`` (a reviewed result or ground truth, DESIGN.md §4); model outputs
(``"model_" + type_id``) are never used as labels. When a series has several
finalised SEGs, the newest by ContentDate/ContentTime wins. Studies without one
are skipped and reported with the reason.

Works with any :class:`~medimg_kernel.dicomweb.DICOMwebProtocol` (the gateway, Orthanc,
a :class:`~medimg_kernel.client.DICOMfolderClient`); reused by the federated clients.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import numpy as np
from pydicom.dataset import Dataset

from .dicom_json import first_value
from .dicomweb import DICOMwebProtocol
from .errors import ConfigurationError, MedImgError
from .seg import MODEL_PREFIX, describe_seg, read_seg
from .series import read_series
from .volume import Volume

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"
_MODALITY, _DESCRIPTION = "00080060", "0008103E"


@dataclass(frozen=True)
class TrainingPair:
    """One image series and its label map on the image's grid.

    Attributes
    ----------
    image
        The series as a Volume (HU, ``[z, y, x]``, LPS geometry in mm).
    labels
        ``uint8`` label map of ``image.shape``: value ``i + 1`` is ``label_names[i]``, 0 background.
    label_names
        The names requested from :func:`load_training_pairs`, in label-value order.
    seg_series_instance_uid, seg_sop_instance_uid
        The SEG the labels come from.
    site
        InstitutionName of the image series ("" when absent).
    """

    image: Volume
    labels: np.ndarray
    label_names: tuple[str, ...]
    seg_series_instance_uid: str
    seg_sop_instance_uid: str
    site: str = ""

    @property
    def study_instance_uid(self) -> str:
        return self.image.study_instance_uid

    @property
    def series_instance_uid(self) -> str:
        return self.image.series_instance_uid


@dataclass(frozen=True)
class SkippedStudy:
    """A study that gave no training pair, and why (no identifying attributes, UIDs only)."""

    study_instance_uid: str
    reason: str


@dataclass(frozen=True)
class TrainingData:
    """What :func:`load_training_pairs` found: the pairs and the skipped studies."""

    pairs: tuple[TrainingPair, ...] = ()
    skipped: tuple[SkippedStudy, ...] = field(default_factory=tuple)

    @property
    def studies(self) -> tuple[str, ...]:
        """StudyInstanceUIDs that gave at least one pair, in order."""
        return tuple(dict.fromkeys(p.study_instance_uid for p in self.pairs))


@dataclass(frozen=True)
class _SegCandidate:
    series_instance_uid: str
    sop_instance_uid: str
    dataset: Dataset
    content_datetime: datetime | None


def _finalised_segs(client: DICOMwebProtocol, study_uid: str, type_id: str) -> list[_SegCandidate]:
    """Every SEG instance of ``study_uid`` whose SeriesDescription is exactly ``type_id``."""
    found = []
    for series in client.search_for_series(study_uid, search_filters={"Modality": "SEG"}):
        series_uid = first_value(series, _SERIES)
        # QIDO servers usually return SeriesDescription; when absent (folder client) the SEG decides.
        description = first_value(series, _DESCRIPTION) if _DESCRIPTION in series else type_id
        if description != type_id:
            logger.debug("study %s: SEG series %s (%r) is not a finalised %r", study_uid, series_uid,
                         description, type_id)
            continue
        for instance in client.search_for_instances(study_uid, series_uid):
            sop_uid = first_value(instance, _SOP)
            seg = client.retrieve_instance(study_uid, series_uid, sop_uid)
            info = describe_seg(seg)
            if info.is_model or info.type_id != type_id:  # trust the object, not only QIDO
                continue
            found.append(_SegCandidate(series_uid, sop_uid, seg, info.content_datetime))
    return found


def _newest(candidates: Sequence[_SegCandidate], image_series_uid: str) -> _SegCandidate | None:
    """The newest candidate that references ``image_series_uid`` (ties: larger SOP Instance UID)."""
    mine = [c for c in candidates if image_series_uid in describe_seg(c.dataset).source_series_instance_uids]
    if not mine:
        return None
    return max(mine, key=lambda c: (c.content_datetime or datetime.min, c.sop_instance_uid))


def _remap(labels: np.ndarray, seg: Dataset, label_names: Sequence[str]) -> np.ndarray:
    """SEG segment numbers → values of ``label_names`` (segments not asked for become 0)."""
    names = describe_seg(seg).segment_names
    lut = np.zeros(max(len(names), int(labels.max(initial=0))) + 1, dtype=np.uint8)
    for number, name in enumerate(names, start=1):
        if name in label_names:
            lut[number] = label_names.index(name) + 1
    return lut[labels]


def _image_series(client: DICOMwebProtocol, study_uid: str, modality: str) -> list[str]:
    found = client.search_for_series(study_uid, search_filters={"Modality": modality})
    return [first_value(s, _SERIES) for s in found if first_value(s, _MODALITY) in ("", modality)]


def _study_pairs(client: DICOMwebProtocol, study_uid: str, type_id: str, label_names: tuple[str, ...],
                 modality: str) -> tuple[list[TrainingPair], str | None]:
    """The pairs of one study, or a reason why there are none."""
    series_uids = _image_series(client, study_uid, modality)
    if not series_uids:
        return [], f"no {modality} series"
    candidates = _finalised_segs(client, study_uid, type_id)
    if not candidates:
        return [], f"no finalised SEG with SeriesDescription {type_id!r} (model outputs are not used)"
    pairs = []
    for series_uid in series_uids:
        chosen = _newest(candidates, series_uid)
        if chosen is None:
            continue
        image = read_series(client, study_uid, series_uid)
        labels = _remap(read_seg(chosen.dataset, image), chosen.dataset, label_names)
        site = str(image.sources[0].get("InstitutionName", "")) if image.sources else ""
        pairs.append(TrainingPair(image, labels, label_names, chosen.series_instance_uid,
                                  chosen.sop_instance_uid, site))
    if not pairs:
        return [], f"its finalised {type_id!r} SEGs reference none of its {modality} series"
    return pairs, None


def load_training_pairs(
    client: DICOMwebProtocol,
    study_instance_uids: Sequence[str] | None = None,
    *,
    type_id: str = "organs",
    label_names: Sequence[str] = ("liver", "spleen", "kidney"),
    modality: str = "CT",
    progress: Callable[[int], object] | None = None,
) -> TrainingData:
    """Image series and their newest finalised SEG, study by study.

    Parameters
    ----------
    client
        A DICOMweb origin (gateway, PACS or folder client).
    study_instance_uids
        The studies to read; ``None``: every study the client can see.
    type_id
        The segmentation type id: SEGs with SeriesDescription exactly ``type_id`` are
        finalised; ``"model_" + type_id`` (unreviewed model output) is never used.
    label_names
        Segment names to keep, in label-value order; other segments become background.
    modality
        Modality of the image series.
    progress
        Called as ``progress(1)`` after each study (``tqdm.update``).

    Returns
    -------
    TrainingData
        ``pairs`` (one per image series with a finalised SEG) and ``skipped`` (studies
        without any, with the reason). A study whose reading fails with a
        :class:`~medimg_kernel.errors.MedImgError` is skipped with the error as reason.
    """
    if type_id.startswith(MODEL_PREFIX):
        raise ConfigurationError(f"type_id {type_id!r} names model outputs; pass the bare type id "
                                 f"(e.g. {type_id.removeprefix(MODEL_PREFIX)!r}): only finalised SEGs are labels")
    names = tuple(label_names)
    if study_instance_uids is None:
        study_instance_uids = [first_value(s, _STUDY) for s in client.search_for_studies()]
    pairs: list[TrainingPair] = []
    skipped: list[SkippedStudy] = []
    for study_uid in study_instance_uids:
        try:
            found, reason = _study_pairs(client, study_uid, type_id, names, modality)
        except MedImgError as exc:
            found, reason = [], f"cannot be read: {exc}"
        pairs += found
        if reason is not None:
            logger.info("skipping study %s: %s", study_uid, reason)
            skipped.append(SkippedStudy(study_uid, reason))
        if progress is not None:
            progress(1)
    return TrainingData(tuple(pairs), tuple(skipped))


def holdout_score(study_instance_uid: str, salt: str = "medimg-holdout") -> float:
    """A stable number in ``[0, 1)`` from the SHA-256 of ``salt`` and the UID."""
    digest = hashlib.sha256(f"{salt}:{study_instance_uid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_holdout(
    items: Sequence[T],
    fraction: float = 0.2,
    *,
    key: Callable[[T], str] = lambda item: item.study_instance_uid,  # type: ignore[attr-defined]
    salt: str = "medimg-holdout",
) -> tuple[list[T], list[T]]:
    """Split into ``(train, holdout)`` deterministically by StudyInstanceUID hash.

    An item is held out when :func:`holdout_score` of its study is below ``fraction``, so a
    study keeps its side when others are added, and every series of a study is on the same
    side. When that holds out nothing but there are at least two studies and
    ``fraction > 0``, the study with the lowest score is held out.
    """
    if not 0 <= fraction < 1:
        raise ConfigurationError(f"split_holdout fraction must be in [0, 1); got {fraction}")
    scores = {key(item): holdout_score(key(item), salt) for item in items}
    held = {uid for uid, score in scores.items() if score < fraction}
    if not held and fraction > 0 and len(scores) >= 2:
        held = {min(scores, key=scores.__getitem__)}
    train = [item for item in items if key(item) not in held]
    holdout = [item for item in items if key(item) in held]
    return train, holdout


__all__ = ["TrainingPair", "SkippedStudy", "TrainingData", "load_training_pairs",
           "holdout_score", "split_holdout"]
