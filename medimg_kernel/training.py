"""Train the organ segmentation model, track it in MLflow and register it.

One call, :func:`train_segmentation`: pairs from :mod:`medimg_kernel.datasets` are
resampled once to the model grid (:mod:`medimg_kernel.model`), random patches are drawn
with per-class oversampling (MONAI ``RandCropByLabelClassesd``), the UNet is trained with
Dice + cross-entropy, and MLflow receives the parameters, per-epoch loss and validation
Dice per organ, the model (``mlflow.pytorch``, ``pt2`` format: a ``torch.export`` archive,
loadable without pickle, with the config in the MLmodel metadata) and a registry version
with an alias and tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from monai.losses import DiceCELoss
from monai.transforms import (
    ClassesToIndicesd, Compose, RandCropByLabelClassesd, RandScaleIntensityd, RandShiftIntensityd, SpatialPadd,
)

from .datasets import TrainingPair
from .errors import ConfigurationError
from .model import (
    CONFIG_KEY, SegmentationModelConfig, build_network, dice_per_label, labels_to_model_grid,
    predict_probabilities, preprocess, segment_volume, select_device,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "organ-segmentation"
DEFAULT_EXPERIMENT = "organ-segmentation"
DEFAULT_ALIAS = "champion"
_PINNED = ("torch", "monai", "numpy", "mlflow")

#: ``progress(n)``: ``n`` more epochs are done (``tqdm.update``).
ProgressCallback = Callable[[int], object]


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train_segmentation` produced.

    ``history`` has one dict per epoch (``loss`` and, when validated, ``val_dice_<organ>`` on
    the model grid); ``val_dice`` is the final validation Dice per organ on the original grids.
    """

    network: torch.nn.Module
    config: SegmentationModelConfig
    run_id: str
    model_uri: str
    model_name: str | None
    model_version: int | None
    history: tuple[dict[str, float], ...]
    val_dice: dict[str, float]
    wall_time_s: float
    train_studies: tuple[str, ...] = field(default=())


def default_artifact_location(tracking_uri: str) -> str | None:
    """``<folder of the database>/artifacts`` for a ``sqlite:///`` URI; else ``None`` (the server's)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    if urlparse(tracking_uri).scheme in ("", "file"):
        raise ConfigurationError(
            f"tracking_uri {tracking_uri!r}: MLflow's file store is disabled since 3.17; "
            "use sqlite:///path/to/mlflow.db or the MLflow server's http(s) URL"
        )
    return None


@contextlib.contextmanager
def tracking(tracking_uri: str) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API (tracking and registry) at ``tracking_uri`` for a block, then restore."""
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (artifacts as :func:`default_artifact_location`) when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))


# --- data ---------------------------------------------------------------------------------------


def model_grid_items(pairs: Sequence[TrainingPair], config: SegmentationModelConfig) -> list[dict[str, np.ndarray]]:
    """Each pair resampled once to the model grid, channel first: ``{"image", "label"}``."""
    items = []
    for pair in pairs:
        image = preprocess(pair.image, config)[0].numpy()
        label = labels_to_model_grid(pair.labels, pair.image.spacing, config)[None]
        items.append({"image": image, "label": label})
    return items


def patch_sampler(config: SegmentationModelConfig, batch_size: int) -> Compose:
    """Random ``roi_size`` patches with every class equally likely at the centre, plus intensity jitter."""
    keys = ["image", "label"]
    sampler = Compose([
        SpatialPadd(keys, spatial_size=config.roi_size),
        ClassesToIndicesd("label", num_classes=config.n_classes, indices_postfix="_cls_indices"),
        RandCropByLabelClassesd(keys, label_key="label", spatial_size=config.roi_size, num_classes=config.n_classes,
                                ratios=[1.0] * config.n_classes, num_samples=batch_size,
                                indices_key="label_cls_indices", warn=False),
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandShiftIntensityd("image", offsets=0.05, prob=0.5),
    ])
    sampler.set_random_state(seed=config.seed)
    return sampler


def _batch(samples: list[dict[str, object]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()
    labels = torch.stack([torch.as_tensor(s["label"]) for s in samples]).long()
    return images, labels


# --- loop -----------------------------------------------------------------------------------------


def _validate_model_grid(network: torch.nn.Module, items: list[dict[str, np.ndarray]],
                         config: SegmentationModelConfig, device: torch.device) -> dict[str, float]:
    """Mean Dice per organ on the model grid (cheap; used every epoch)."""
    scores: dict[str, list[float]] = {name: [] for name in config.label_names}
    for item in items:
        probabilities = predict_probabilities(network, torch.from_numpy(item["image"])[None], config, device)
        for name, value in dice_per_label(probabilities[0].argmax(0).numpy(), item["label"][0],
                                          config.label_names).items():
            scores[name].append(value)
    return {f"val_dice_{name}": float(np.mean(v)) for name, v in scores.items()}


def validate(network: torch.nn.Module, pairs: Sequence[TrainingPair], config: SegmentationModelConfig,
             device: torch.device | None = None) -> dict[str, float]:
    """Mean Dice per organ of :func:`segment_volume` against each pair's labels, on the original grids."""
    scores: dict[str, list[float]] = {name: [] for name in config.label_names}
    for pair in pairs:
        prediction = segment_volume(network, pair.image, config, device)
        for name, value in dice_per_label(prediction, pair.labels, config.label_names).items():
            scores[name].append(value)
    return {name: float(np.mean(v)) for name, v in scores.items() if v}


#: ``on_epoch(epoch, metrics)``: called after each epoch (0-based) with its metrics.
EpochCallback = Callable[[int, dict[str, float]], object]


def _train_epochs(network: torch.nn.Module, train_items: list[dict[str, np.ndarray]],
                  val_items: list[dict[str, np.ndarray]], config: SegmentationModelConfig, *, epochs: int,
                  batch_size: int, lr: float, device: torch.device, progress: ProgressCallback | None,
                  on_epoch: EpochCallback | None = None, seed: int | None = None,
                  proximal_mu: float = 0.0, constant_lr: bool = False) -> list[dict[str, float]]:
    """The optimisation loop; one epoch draws one batch of patches from every training volume.

    ``proximal_mu > 0`` adds FedProx's term ``mu / 2 * ||w - w0||²`` (``w0``: the weights at entry).
    """
    seed = config.seed if seed is None else seed
    sampler = patch_sampler(config, batch_size)
    sampler.set_random_state(seed=seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-5)
    scheduler = (torch.optim.lr_scheduler.ConstantLR(optimiser, factor=1.0) if constant_lr else
                 torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs * len(train_items))))
    order_rng = np.random.default_rng(seed)
    anchor = [p.detach().clone() for p in network.parameters()] if proximal_mu > 0 else []
    history = []
    for epoch in range(epochs):
        network.train()
        losses = []
        for index in order_rng.permutation(len(train_items)):
            images, labels = _batch(sampler(train_items[index]))
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(images.to(device)), labels.to(device))
            losses.append(float(loss.detach()))
            if anchor:
                loss = loss + proximal_mu / 2 * sum(
                    torch.sum((p - a) ** 2) for p, a in zip(network.parameters(), anchor, strict=True))
            loss.backward()
            optimiser.step()
            scheduler.step()
        metrics = {"loss": float(np.mean(losses))}
        if val_items:
            metrics |= _validate_model_grid(network, val_items, config, device)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        logger.info("epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        history.append(metrics)
        if progress is not None:
            progress(1)
    return history


def train_epochs(
    network: torch.nn.Module,
    pairs: Sequence[TrainingPair],
    config: SegmentationModelConfig,
    *,
    epochs: int,
    batch_size: int = 2,
    lr: float = 3e-3,
    device: str | torch.device | None = None,
    seed: int | None = None,
    proximal_mu: float = 0.0,
    constant_lr: bool = False,
    on_epoch: EpochCallback | None = None,
    items: list[dict[str, np.ndarray]] | None = None,
) -> list[dict[str, float]]:
    """Train ``network`` in place on ``pairs`` for ``epochs`` epochs; no MLflow, no validation.

    The loop of :func:`train_segmentation`, for callers that track elsewhere (a federated
    site trains a few local epochs per round with it).

    Parameters
    ----------
    network
        Built by :func:`~medimg_kernel.model.build_network` for ``config``; moved to ``device``.
    pairs
        Training pairs (labels in ``config.label_names`` order); at least one.
    epochs, batch_size, lr
        As in :func:`train_segmentation` (the cosine schedule spans these ``epochs``).
    seed
        Seed of patch sampling and volume order (default ``config.seed``); vary it per round.
    proximal_mu
        FedProx proximal coefficient; 0 is plain training.
    constant_lr
        Keep ``lr`` for all steps instead of the cosine schedule (a federated site gets its
        round's learning rate from a schedule over rounds).
    on_epoch
        ``on_epoch(epoch, {"loss": ...})`` after each epoch.
    items
        ``pairs`` already on the model grid (:func:`model_grid_items`), to skip resampling when
        the same pairs are trained on again (a site, round after round).

    Returns
    -------
    list of dict
        One ``{"loss": mean Dice+CE loss}`` per epoch.
    """
    if not pairs or epochs < 1 or batch_size < 1:
        raise ConfigurationError(f"train_epochs needs at least one pair, epochs >= 1 and batch_size >= 1; got "
                                 f"{len(pairs)} pairs, epochs={epochs}, batch_size={batch_size}")
    device = select_device(device)
    network.to(device)
    return _train_epochs(network, items if items is not None else model_grid_items(pairs, config), [], config,
                         epochs=epochs,
                         batch_size=batch_size, lr=lr, device=device, progress=None, on_epoch=on_epoch,
                         seed=seed, proximal_mu=proximal_mu, constant_lr=constant_lr)


# --- MLflow model -------------------------------------------------------------------------------


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (given explicitly: inference takes ~10 s)."""
    pins = []
    for package in _PINNED:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def log_segmentation_model(network: torch.nn.Module, config: SegmentationModelConfig,  # noqa: ANN201
                           model_name: str | None):
    """Log ``network`` to the active MLflow run in ``pt2`` format with its config as metadata.

    Dynamic batch and spatial sizes; registered as a new version of ``model_name`` unless it is
    ``None``. Returns MLflow's ``ModelInfo``. :func:`~medimg_kernel.registry.load_segmentation_model`
    loads what this logs.
    """
    side = 2 * int(np.prod(config.strides))
    example = np.zeros((2, 1, side, side, side), dtype=np.float32)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1, -1), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.n_classes, -1, -1, -1), "logits")]),
    )
    return mlflow.pytorch.log_model(
        network.cpu().eval(), name="model", serialization_format="pt2", input_example=example,
        signature=signature, pip_requirements=pip_requirements(),
        metadata={CONFIG_KEY: json.loads(config.to_json())}, registered_model_name=model_name,
        validate_serving_input=False,  # the pyfunc JSON example path cannot feed 5-D tensors; it only warns
    )


def training_set_digest(study_uids: Iterable[str]) -> str:
    """SHA-256 (hex) of the sorted, distinct StudyInstanceUIDs, one per line: the training set's
    fingerprint, recorded instead of the UIDs themselves.

    Runs and registered models are read by engineers of every dataset, so they never hold study
    UIDs; whoever may read the studies recomputes the digest to check a model's provenance.
    """
    lines = "".join(f"{uid}\n" for uid in sorted(set(study_uids)))
    return hashlib.sha256(lines.encode()).hexdigest()


def _tags(train_pairs: Sequence[TrainingPair], val_dice: dict[str, float]) -> dict[str, str]:
    n_studies = len(set(p.study_instance_uid for p in train_pairs))
    return {
        "train_set_sha256": training_set_digest(p.study_instance_uid for p in train_pairs),
        "n_train_studies": str(n_studies),
        "sites": ",".join(sorted({p.site for p in train_pairs if p.site})),
        **{f"val_dice_{name}": f"{value:.4f}" for name, value in val_dice.items()},
    }


def _params(config: SegmentationModelConfig, **extra: object) -> dict[str, str]:
    params = {k: json.dumps(v) if isinstance(v, (list, tuple)) else str(v) for k, v in asdict(config).items()}
    return params | {k: str(v) for k, v in extra.items()}


def train_segmentation(
    train_pairs: Sequence[TrainingPair],
    val_pairs: Sequence[TrainingPair],
    config: SegmentationModelConfig | None = None,
    *,
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    model_name: str | None = DEFAULT_MODEL_NAME,
    alias: str | None = DEFAULT_ALIAS,
    epochs: int = 30,
    batch_size: int = 2,
    lr: float = 3e-3,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
    run_name: str | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train a UNet on ``train_pairs``, validate on ``val_pairs``, log and register it in MLflow.

    Parameters
    ----------
    train_pairs, val_pairs
        From :func:`medimg_kernel.datasets.load_training_pairs` (labels in
        ``config.label_names`` order); ``val_pairs`` may be empty.
    config
        Network and preprocessing; default :class:`SegmentationModelConfig`.
    tracking_uri
        MLflow tracking and registry URI: ``sqlite:///…/mlflow.db`` (artifacts next to it,
        under ``artifacts/``) or the MLflow server's URL.
    experiment
        MLflow experiment name (created when missing).
    model_name, alias
        Registered model name and the alias moved to the new version; ``model_name=None``
        logs the model without registering it.
    epochs, batch_size, lr
        Each epoch draws ``batch_size`` patches of ``config.roi_size`` from every training
        volume in a seeded order (one optimiser step per volume); AdamW with a cosine schedule.
    device
        Default :func:`~medimg_kernel.model.select_device`.
    num_threads
        torch CPU threads during training; default the cores this process may use.
    progress
        ``progress(1)`` after each epoch (``tqdm(total=epochs).update``).

    Returns
    -------
    TrainingResult
        The trained network (on the CPU, eval mode), run id, model URI, registered version.
    """
    config = config or SegmentationModelConfig()
    if not train_pairs or epochs < 1 or batch_size < 1:
        raise ConfigurationError("train_segmentation needs at least one training pair, epochs >= 1 and "
                                 f"batch_size >= 1; got {len(train_pairs)} pairs, epochs={epochs}, "
                                 f"batch_size={batch_size}")
    start = time.perf_counter()
    device = select_device(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or len(os.sched_getaffinity(0)))
    try:
        with tracking(tracking_uri) as client:
            exp_id = experiment_id(client, experiment, tracking_uri)
            with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
                mlflow.log_params(_params(config, epochs=epochs, batch_size=batch_size, lr=lr,
                                          n_train=len(train_pairs), n_val=len(val_pairs), device=device.type))
                mlflow.log_dict(json.loads(config.to_json()), "segmentation_config.json")
                mlflow.log_dict({"n_studies": len({p.study_instance_uid for p in train_pairs}),
                                 "sha256": training_set_digest(p.study_instance_uid for p in train_pairs)},
                                "train_set.json")
                network = build_network(config).to(device)
                train_items = model_grid_items(train_pairs, config)
                val_items = model_grid_items(val_pairs, config)
                history = _train_epochs(network, train_items, val_items, config, epochs=epochs,
                                        batch_size=batch_size, lr=lr, device=device, progress=progress,
                                        on_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch))
                val_dice = validate(network, val_pairs, config, device)
                mlflow.log_metrics({f"final_val_dice_{k}": v for k, v in val_dice.items()}, step=epochs)
                info = log_segmentation_model(network, config, model_name)
                model_version = info.registered_model_version
                if model_name is not None and model_version is not None:
                    for key, value in _tags(train_pairs, val_dice).items():
                        client.set_model_version_tag(model_name, str(model_version), key, value)
                    if alias:
                        client.set_registered_model_alias(model_name, alias, str(model_version))
                wall = time.perf_counter() - start
                mlflow.log_metric("wall_time_s", wall)
    finally:
        torch.set_num_threads(threads)
    logger.info("trained %s in %.1f s; version %s, val Dice %s", model_name, wall, model_version, val_dice)
    return TrainingResult(network.cpu().eval(), config, run.info.run_id, info.model_uri, model_name,
                          int(model_version) if model_version is not None else None, tuple(history), val_dice,
                          wall, tuple(dict.fromkeys(p.study_instance_uid for p in train_pairs)))


__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_EXPERIMENT", "DEFAULT_ALIAS", "ProgressCallback", "TrainingResult",
           "default_artifact_location", "tracking", "patch_sampler", "validate", "pip_requirements",
           "train_segmentation", "train_epochs", "training_set_digest", "model_grid_items", "EpochCallback", "log_segmentation_model", "experiment_id"]
