"""Load the registered organ segmentation model, or train one when none is registered.

:func:`load_segmentation_model` resolves a registered model name and an alias (or a
version number) in the MLflow registry, reads the :class:`SegmentationModelConfig` stored
in the model's MLmodel metadata, loads the ``pt2`` archive (pickle-free) and copies its
weights into a network rebuilt with :func:`~medimg_kernel.model.build_network`, so
inference uses exactly the network and preprocessing that were trained. The returned
:class:`LoadedModel` names the version, so pipelines record which one they used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow.artifacts
import mlflow.pytorch
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from .datasets import load_training_pairs, split_holdout
from .dicomweb import DICOMwebProtocol
from .errors import ConfigurationError, ModelNotFoundError
from .model import CONFIG_KEY, SegmentationModelConfig, build_network, select_device
from .training import DEFAULT_ALIAS, DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME, tracking, train_segmentation

logger = logging.getLogger(__name__)

#: Defaults of :func:`ensure_segmentation_model`: small enough for a few minutes on 2 CPU cores.
FIRST_MODEL_EPOCHS = 30
FIRST_MODEL_HOLDOUT = 0.2


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version, ready for :func:`~medimg_kernel.model.segment_volume`.

    Attributes
    ----------
    network
        The rebuilt UNet with the registered weights, eval mode, on ``device``.
    config
        Its preprocessing and architecture.
    name, version
        Registered model name and version number.
    run_id
        The MLflow run that trained it.
    model_uri
        ``models:/<name>/<version>``: record it with results.
    tags
        The version's tags (training studies, sites, validation Dice).
    """

    network: torch.nn.Module
    config: SegmentationModelConfig
    name: str
    version: int
    run_id: str
    model_uri: str
    tags: dict[str, str]


def _resolve(client: MlflowClient, name: str, alias_or_version: str | int, tracking_uri: str) -> ModelVersion:
    """The ModelVersion for an alias or a version number; :class:`ModelNotFoundError` when none."""
    wanted = str(alias_or_version)
    try:
        if wanted.isdigit():
            return client.get_model_version(name, wanted)
        return client.get_model_version_by_alias(name, wanted)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise ModelNotFoundError(name, wanted, tracking_uri) from exc
        raise


def _read_config(model_dir: Path, name: str, version: str) -> SegmentationModelConfig:
    metadata = Model.load(str(model_dir / "MLmodel")).metadata or {}
    if CONFIG_KEY not in metadata:
        raise ConfigurationError(
            f"registered model {name!r} version {version} has no {CONFIG_KEY!r} in its MLmodel metadata: "
            "it was not logged by medimg_kernel.training.train_segmentation; register one that was"
        )
    return SegmentationModelConfig.from_dict(metadata[CONFIG_KEY])


def load_segmentation_model(
    tracking_uri: str,
    name: str = DEFAULT_MODEL_NAME,
    alias_or_version: str | int = DEFAULT_ALIAS,
    *,
    device: str | torch.device | None = None,
    dst_path: str | Path | None = None,
    cache: bool = True,
) -> LoadedModel:
    """Load a registered segmentation model by alias (e.g. ``"champion"``) or version number.

    The alias is resolved on every call (so a moved alias takes effect at once); the weights of
    a version already loaded in this process are reused when ``cache`` is true, which is what
    keeps a warm pipeline kernel from re-downloading the model for every study.

    Parameters
    ----------
    tracking_uri
        MLflow tracking and registry URI (``sqlite:///…`` or the server URL).
    name
        Registered model name.
    alias_or_version
        An alias, or a version number (int or digit string).
    device
        Default :func:`~medimg_kernel.model.select_device`.
    dst_path
        Folder to download the model into (default a temporary folder).

    Raises
    ------
    ModelNotFoundError
        No such registered model, alias or version; the message says how to train one.
    ConfigurationError
        The version was not logged by :func:`~medimg_kernel.training.train_segmentation`.
    """
    # MLflow's models:/ resolution reads the *global* registry URI: point it here for the block.
    with tracking(tracking_uri) as client:
        found = _resolve(client, name, alias_or_version, tracking_uri)
        model_uri = f"models:/{name}/{found.version}"
        key = (tracking_uri, name, int(found.version), str(select_device(device)))
        if cache and key in _LOADED:
            return _LOADED[key]
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=tracking_uri,
                                                         dst_path=str(dst_path) if dst_path else None))
    config = _read_config(local, name, str(found.version))
    exported = mlflow.pytorch.load_model(str(local))  # pt2: validated pickle-free, then torch.export.load
    network = build_network(config)
    network.load_state_dict(exported.state_dict(), strict=True)
    network = network.to(select_device(device)).eval()
    logger.info("loaded %s (run %s)", model_uri, found.run_id)
    loaded = LoadedModel(network, config, name, int(found.version), str(found.run_id), model_uri, dict(found.tags))
    if cache:
        _LOADED[key] = loaded
    return loaded


#: Models loaded in this process, by (tracking URI, name, version, device).
_LOADED: dict[tuple[str, str, int, str], LoadedModel] = {}


def parse_model_reference(reference: str) -> tuple[str, str]:
    """``"name"``, ``"name@alias"``, ``"name/3"`` or ``"models:/name/3"`` → (name, alias or version).

    A bare name means the ``champion`` alias.
    """
    text = reference.removeprefix("models:/")
    if "@" in text:
        name, _, alias = text.partition("@")
        return name, alias
    if "/" in text:
        name, _, version = text.partition("/")
        return name, version
    return text, DEFAULT_ALIAS


def ensure_segmentation_model(
    client: DICOMwebProtocol,
    tracking_uri: str,
    *,
    name: str = DEFAULT_MODEL_NAME,
    alias: str = DEFAULT_ALIAS,
    experiment: str = DEFAULT_EXPERIMENT,
    study_instance_uids: Sequence[str] | None = None,
    type_id: str = "organs",
    config: SegmentationModelConfig | None = None,
    epochs: int = FIRST_MODEL_EPOCHS,
    holdout: float = FIRST_MODEL_HOLDOUT,
    progress: Callable[[int], object] | None = None,
) -> tuple[LoadedModel, bool]:
    """The registered model ``name@alias``; when there is none, train and register one first.

    Training reads pairs from ``client`` (:func:`~medimg_kernel.datasets.load_training_pairs`:
    only finalised SEGs of ``type_id``), holds out ``holdout`` of the studies by UID hash for
    validation, and trains ``epochs`` epochs (a few minutes on 2 CPU cores with the defaults).

    Parameters
    ----------
    progress
        ``progress(1)`` after each training epoch (``tqdm(total=epochs).update``); not called
        when a model is already registered.

    Returns
    -------
    (LoadedModel, bool)
        The model and whether it was trained by this call.
    """
    try:
        return load_segmentation_model(tracking_uri, name, alias), False
    except ModelNotFoundError:
        logger.info("no registered %s@%s: training one", name, alias)
    config = config or SegmentationModelConfig()
    data = load_training_pairs(client, study_instance_uids, type_id=type_id, label_names=config.label_names)
    if not data.pairs:
        reasons = "; ".join(f"{s.study_instance_uid}: {s.reason}" for s in data.skipped[:5]) or "no studies"
        raise ModelNotFoundError(name, alias, tracking_uri,
                                 hint=f"and nothing to train on: no study has a finalised {type_id!r} SEG ({reasons})")
    train, validation = split_holdout(list(data.pairs), holdout)
    train_segmentation(train, validation, config, tracking_uri=tracking_uri, experiment=experiment,
                       model_name=name, alias=alias, epochs=epochs, progress=progress)
    return load_segmentation_model(tracking_uri, name, alias), True


__all__ = ["LoadedModel", "load_segmentation_model", "ensure_segmentation_model", "FIRST_MODEL_EPOCHS"]
