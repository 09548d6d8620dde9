"""The segmentation model: config round trip, geometry-preserving resampling, inference shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.model import (
    SegmentationModelConfig, build_network, dice_per_label, labels_from_model_grid, labels_to_model_grid,
    model_grid, preprocess, segment_volume, select_device,
)
from medimg_kernel.phantom import DEFAULT_SITES, make_phantom

#: A tiny network: inference in well under a second on 2 cores.
TINY = SegmentationModelConfig(channels=(4, 8), strides=(2,), num_res_units=0, roi_size=(16, 32, 32),
                               target_spacing_mm=(6.0, 6.0, 6.0))


@pytest.fixture(scope="module")
def oblique_phantom():
    """SITEC's oblique grid (tilted and rotated), reduced to 128² × 60 for speed."""
    from dataclasses import replace

    site = replace(DEFAULT_SITES[2], matrix=(128, 128), n_slices=60, slice_spacing_mm=3.0)
    return make_phantom(site, 11)


def test_config_json_round_trip_and_validation():
    config = SegmentationModelConfig(roi_size=(32, 64, 64), hu_window=(-100, 200))
    assert SegmentationModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigurationError, match="roi_size"):
        SegmentationModelConfig(roi_size=(30, 64, 64))
    with pytest.raises(ConfigurationError, match="unknown keys"):
        SegmentationModelConfig.from_dict({"label_names": ["liver"], "learning_rate": 1})


def test_label_map_round_trip_through_the_model_grid_keeps_geometry(oblique_phantom):
    ct, labels = oblique_phantom
    config = SegmentationModelConfig()
    on_model = labels_to_model_grid(labels.array, ct.spacing, config)
    back = labels_from_model_grid(on_model, ct.shape, config.n_classes)
    assert back.shape == ct.shape
    dice = dice_per_label(back, labels.array, config.label_names)
    assert min(dice.values()) > 0.95, dice


def test_model_grid_covers_the_same_extent_with_the_same_direction(oblique_phantom):
    ct, _ = oblique_phantom
    config = SegmentationModelConfig()
    grid = model_grid(ct, config)
    assert grid.shape == tuple(preprocess(ct, config).shape[2:])
    np.testing.assert_allclose(grid.direction, ct.direction)
    np.testing.assert_allclose(grid.spacing, config.target_spacing_mm, rtol=0.05)
    for corner in ([-0.5, -0.5, -0.5], np.asarray(ct.shape) - 0.5):  # outer voxel edges
        model_corner = np.where(np.asarray(corner) < 0, -0.5, np.asarray(grid.shape) - 0.5)
        np.testing.assert_allclose(grid.index_to_lps(model_corner), ct.index_to_lps(corner), atol=1e-3)


def test_preprocessing_windows_hu_to_unit_range(oblique_phantom):
    ct, _ = oblique_phantom
    image = preprocess(ct, SegmentationModelConfig())
    assert image.dtype == torch.float32 and image.ndim == 5
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_segment_volume_returns_the_volume_grid(oblique_phantom):
    ct, _ = oblique_phantom
    network = build_network(TINY)
    labels = segment_volume(network, ct, TINY, torch.device("cpu"))
    assert labels.shape == ct.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    again = segment_volume(build_network(TINY), ct, TINY, torch.device("cpu"))  # same seed, same weights
    np.testing.assert_array_equal(labels, again)


def test_dice_per_label():
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[:2] = 1
    pred = truth.copy()
    pred[0] = 0
    assert dice_per_label(pred, truth, ["liver", "spleen"]) == {"liver": pytest.approx(2 * 16 / 48), "spleen": 1.0}
    assert dice_per_label(pred, truth, {1: "liver"}) == {"liver": pytest.approx(2 / 3)}
    with pytest.raises(ConfigurationError):
        dice_per_label(pred[:2], truth, ["liver"])


def test_select_device_prefers_cuda_when_present_and_honours_an_override(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("cuda:1") == torch.device("cuda", 1)  # an override is taken as given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device() == torch.device("cuda")
    assert select_device("cpu") == torch.device("cpu")  # the override wins over a present GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device() == torch.device("cpu")
