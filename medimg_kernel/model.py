"""The organ segmentation model: configuration, network, preprocessing and inference.

Read as MONAI Label reads an inference task: :func:`preprocess` (HU window, resampling to
the model grid) → :func:`sliding_window_inference` → :func:`postprocess` (probabilities back
to the volume's grid, argmax). :func:`segment_volume` chains the three.

Coordinate handling
-------------------
Resampling happens in *index space* and keeps the volume's orientation: each array axis
``a`` with ``n_a`` voxels of ``s_a`` mm becomes ``m_a = max(1, round(n_a * s_a / t_a))``
voxels covering the same extent (``n_a * s_a`` mm, voxel edges aligned), so the model
voxel size is ``n_a * s_a / m_a`` ≈ the target spacing ``t_a``. Model voxel ``q`` has its
centre at the continuous source index ``(q + 0.5) * n_a / m_a - 0.5`` (PyTorch's
``align_corners=False`` convention). Direction cosines are unchanged, so an oblique series
stays oblique: the network sees a slightly differently sized, never rotated, image. The
grid of the model array in LPS millimetres is :func:`model_grid`. Downsampled axes are
box-filtered (``adaptive_avg_pool``: anti-aliasing for the image, partial-volume fractions
for labels), upsampled axes trilinearly interpolated; a label map travels as one-hot
fractions and comes back by argmax, probabilities are resampled before the argmax.

torch and MONAI are imported with this module, never from :mod:`medimg_kernel` itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from .errors import ConfigurationError
from .volume import Volume

logger = logging.getLogger(__name__)

#: The MLflow model's config travels under this key (MLmodel ``metadata``) and file name.
CONFIG_KEY = "medimg_segmentation_config"


@dataclass(frozen=True)
class SegmentationModelConfig:
    """Everything needed to rebuild the network and its pre- and post-processing.

    Parameters
    ----------
    label_names
        Output classes after background: label value ``i + 1`` is ``label_names[i]``.
    target_spacing_mm
        Model grid voxel size along the volume's ``(z, y, x)`` axes, in mm (approximate:
        see the module docstring).
    hu_window
        ``(low, high)`` in HU; values are clipped to it and mapped linearly to ``[0, 1]``.
    channels, strides, num_res_units
        :class:`monai.networks.nets.UNet` architecture (3-D, one input channel).
    roi_size
        Sliding-window (and training patch) size in model voxels ``(z, y, x)``; each must
        be a multiple of the product of ``strides``.
    overlap
        Sliding-window overlap (fraction of the ROI, 0–<1).
    sw_batch_size
        Windows per forward pass during inference.
    inference_dtype
        ``"float32"`` or ``"bfloat16"`` (autocast; faster on recent CPUs, slightly less exact).
    seed
        Seed of weight initialisation and patch sampling.
    """

    label_names: tuple[str, ...] = ("liver", "spleen", "kidney")
    target_spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    hu_window: tuple[float, float] = (-200.0, 250.0)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    roi_size: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.25
    sw_batch_size: int = 2
    inference_dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("label_names", "target_spacing_mm", "hu_window", "channels", "strides", "roi_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        factor = int(np.prod(self.strides)) if self.strides else 1
        problems = {
            "label_names": len(self.label_names) >= 1 and len(set(self.label_names)) == len(self.label_names),
            "target_spacing_mm": len(self.target_spacing_mm) == 3 and min(self.target_spacing_mm) > 0,
            "hu_window": len(self.hu_window) == 2 and self.hu_window[0] < self.hu_window[1],
            "channels/strides": len(self.channels) == len(self.strides) + 1 and min(self.strides, default=1) >= 1,
            "roi_size": len(self.roi_size) == 3 and all(r > 0 and r % factor == 0 for r in self.roi_size),
            "overlap": 0 <= self.overlap < 1,
            "sw_batch_size": self.sw_batch_size >= 1,
            "inference_dtype": self.inference_dtype in ("float32", "bfloat16"),
        }
        bad = [k for k, ok in problems.items() if not ok]
        if bad:
            raise ConfigurationError(
                f"SegmentationModelConfig: invalid {', '.join(bad)} (unique label names, 3 positive spacings, "
                f"low < high HU, len(channels) == len(strides) + 1, roi_size multiples of {factor}, "
                "0 <= overlap < 1, inference_dtype 'float32' or 'bfloat16')"
            )

    @property
    def n_classes(self) -> int:
        """Output channels: background plus one per label."""
        return len(self.label_names) + 1

    def to_json(self) -> str:
        """The config as JSON (lists for tuples); inverse of :meth:`from_json`."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SegmentationModelConfig:
        """Build from :meth:`to_json`'s content; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigurationError(f"SegmentationModelConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(raw))

    @classmethod
    def from_json(cls, text: str) -> SegmentationModelConfig:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


def build_network(config: SegmentationModelConfig) -> UNet:
    """A freshly initialised 3-D UNet for ``config`` (weights seeded by ``config.seed``)."""
    torch.manual_seed(config.seed)
    return UNet(spatial_dims=3, in_channels=1, out_channels=config.n_classes, channels=config.channels,
                strides=config.strides, num_res_units=config.num_res_units, norm="INSTANCE")


def select_device(override: str | torch.device | None = None) -> torch.device:
    """``override`` when given (e.g. ``"cpu"``, ``"cuda:1"``), else CUDA when available, else CPU."""
    if override is not None:
        return torch.device(override)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- geometry ----------------------------------------------------------------------------------


def model_shape(volume_shape: Sequence[int], spacing: Sequence[float],
                config: SegmentationModelConfig) -> tuple[int, int, int]:
    """Shape of the model grid for an array of ``volume_shape`` voxels of ``spacing`` mm."""
    return tuple(max(1, round(n * s / t)) for n, s, t in  # type: ignore[return-value]
                 zip(volume_shape, spacing, config.target_spacing_mm, strict=True))


def model_grid(volume: Volume, config: SegmentationModelConfig) -> Volume:
    """The model grid of ``volume`` as an empty-valued Volume (same extent and direction, LPS mm)."""
    shape = model_shape(volume.shape, volume.spacing, config)
    scale = np.asarray(volume.shape, float) / np.asarray(shape, float)
    spacing = np.asarray(volume.spacing) * scale
    origin = volume.index_to_lps(0.5 * scale - 0.5)  # continuous source index of model voxel 0
    return Volume(np.zeros(shape, np.float32), tuple(spacing),  # type: ignore[arg-type]
                  tuple(origin), volume.direction)  # type: ignore[arg-type]


def resize(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample ``(N, C, z, y, x)`` to spatial ``shape``, keeping the extent (see module docstring)."""
    current = tuple(tensor.shape[2:])
    target = tuple(int(s) for s in shape)
    if current == target:
        return tensor
    box = tuple(min(c, t) for c, t in zip(current, target, strict=True))
    if box != current:
        tensor = F.adaptive_avg_pool3d(tensor, box)
    if box != target:
        tensor = F.interpolate(tensor, size=target, mode="trilinear", align_corners=False)
    return tensor


def normalise(array: np.ndarray, config: SegmentationModelConfig) -> np.ndarray:
    """HU clipped to ``config.hu_window`` and mapped to ``[0, 1]`` (float32)."""
    low, high = config.hu_window
    out = np.clip(np.asarray(array, dtype=np.float32), low, high)
    out -= low
    out /= high - low
    return out


def preprocess(volume: Volume, config: SegmentationModelConfig) -> torch.Tensor:
    """Window and resample ``volume`` to the model grid: a ``(1, 1, z, y, x)`` float32 tensor."""
    image = torch.from_numpy(normalise(volume.array, config))[None, None]
    return resize(image, model_shape(volume.shape, volume.spacing, config))


def labels_to_model_grid(labels: np.ndarray, spacing: Sequence[float],
                         config: SegmentationModelConfig) -> np.ndarray:
    """A label map (values ``0..len(label_names)``) on the model grid (uint8; argmax of fractions)."""
    one_hot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), config.n_classes)
    fractions = one_hot.permute(3, 0, 1, 2)[None].float()
    out = resize(fractions, model_shape(labels.shape, spacing, config))
    return out[0].argmax(0).numpy().astype(np.uint8)


def postprocess(probabilities: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """``(1, C, z', y', x')`` probabilities on the model grid → label map of ``shape`` (uint8)."""
    return resize(probabilities.float(), shape)[0].argmax(0).numpy().astype(np.uint8)


def labels_from_model_grid(labels: np.ndarray, shape: Sequence[int], n_classes: int) -> np.ndarray:
    """A model-grid label map back on a volume grid of ``shape`` (one-hot, resampled, argmax)."""
    one_hot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), n_classes).permute(3, 0, 1, 2)[None]
    return postprocess(one_hot.float(), shape)


# --- inference ---------------------------------------------------------------------------------


def predict_probabilities(network: torch.nn.Module, image: torch.Tensor, config: SegmentationModelConfig,
                          device: torch.device) -> torch.Tensor:
    """Softmax probabilities ``(1, C, z, y, x)`` (float32, on the CPU) of a preprocessed image."""
    network.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.inference_dtype == "bfloat16")
    with torch.inference_mode(), autocast:
        logits = sliding_window_inference(image.to(device), config.roi_size, config.sw_batch_size, network,
                                          overlap=config.overlap, mode="gaussian")
    return torch.softmax(logits.float(), dim=1).cpu()


def segment_volume(network: torch.nn.Module, volume: Volume, config: SegmentationModelConfig,
                   device: torch.device | None = None) -> np.ndarray:
    """Label map of ``volume`` on the volume's own grid.

    Parameters
    ----------
    network
        A network built by :func:`build_network` for ``config`` (trained), on ``device``.
    volume
        A CT volume in HU, ``[z, y, x]`` with its spacing in mm.
    config
        The network's config (preprocessing, ROI, overlap).
    device
        Where to run; default :func:`select_device`.

    Returns
    -------
    numpy.ndarray
        ``uint8`` of shape ``volume.shape``: 0 background, ``i + 1`` is ``config.label_names[i]``.
    """
    device = device or select_device()
    image = preprocess(volume, config)
    probabilities = predict_probabilities(network, image, config, device)
    labels = postprocess(probabilities, volume.shape)
    logger.debug("segmented %s on a %s model grid", volume.shape, tuple(image.shape[2:]))
    return labels


def dice_per_label(pred: np.ndarray, truth: np.ndarray, labels: Mapping[int, str] | Sequence[str]) -> dict[str, float]:
    """Dice of each label between two label maps of the same shape.

    ``labels`` is either ``{value: name}`` or a sequence of names for values 1, 2, ...
    A label absent from both maps scores 1.0 (nothing to find, nothing found).
    """
    if pred.shape != truth.shape:
        raise ConfigurationError(f"dice_per_label: shapes differ ({pred.shape} vs {truth.shape})")
    mapping = dict(labels) if isinstance(labels, Mapping) else {i + 1: n for i, n in enumerate(labels)}
    scores = {}
    for value, name in mapping.items():
        p, t = pred == value, truth == value
        total = int(p.sum()) + int(t.sum())
        scores[name] = 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total
    return scores


__all__ = [
    "CONFIG_KEY", "SegmentationModelConfig", "build_network", "select_device", "model_shape", "model_grid",
    "resize", "normalise", "preprocess", "labels_to_model_grid", "labels_from_model_grid", "postprocess",
    "predict_probabilities", "segment_volume", "dice_per_label",
]
