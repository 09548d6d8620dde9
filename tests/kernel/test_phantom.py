"""Tests of medimg_kernel.phantom: determinism, plausible anatomy, site differences, geometry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.phantom import (
    DEFAULT_SITES,
    LABEL_KIDNEY,
    LABEL_LIVER,
    LABEL_SPLEEN,
    SiteProfile,
    make_phantom,
    site_profiles,
)
from medimg_kernel.volume import Volume

#: A coarse grid that covers every organ with margin, for fast anatomy checks.
COARSE = SiteProfile("COARSE", "test", "test", slice_spacing_mm=3.0, matrix=(128, 128),
                     field_of_view_mm=420.0, n_slices=100, noise_hu=10.0)
SEEDS = range(6)


def _ml(labels: Volume, value: int) -> float:
    return float((labels.array == value).sum() * np.prod(labels.spacing) / 1000.0)


def _centroid_lps(labels: Volume, value: int) -> np.ndarray:
    return labels.index_to_lps(np.argwhere(labels.array == value).mean(axis=0))


def test_same_seed_gives_identical_volumes() -> None:
    site = DEFAULT_SITES[1]
    ct1, lab1 = make_phantom(site, 7)
    ct2, lab2 = make_phantom(site, 7)
    assert np.array_equal(ct1.array, ct2.array) and np.array_equal(lab1.array, lab2.array)
    assert ct1.same_grid(ct2) and lab1.same_grid(ct1)
    ct3, lab3 = make_phantom(site, 8)
    assert not np.array_equal(ct1.array, ct3.array)
    assert not np.array_equal(lab1.array, lab3.array)


def test_output_types_and_geometry() -> None:
    site = DEFAULT_SITES[0]
    ct, labels = make_phantom(site, 1)
    assert ct.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert ct.shape == (site.n_slices, *site.matrix) and ct.modality == "CT"
    assert ct.spacing == (site.slice_spacing_mm, site.pixel_spacing_mm, site.pixel_spacing_mm)
    assert set(np.unique(labels.array)) == {0, LABEL_LIVER, LABEL_SPLEEN, LABEL_KIDNEY}
    # Voxel 0 is at the patient's right, anterior, inferior corner for an axial grid.
    assert np.allclose(ct.direction, np.eye(3)[::-1])
    # Air outside the body, in a corner.
    assert abs(ct.array[:, :10, :10].mean() - (-1000)) < 5


@pytest.mark.parametrize("seed", SEEDS)
def test_anatomy_is_plausible(seed: int) -> None:
    ct, labels = make_phantom(COARSE, seed)
    volumes = {v: _ml(labels, v) for v in (LABEL_LIVER, LABEL_SPLEEN, LABEL_KIDNEY)}
    assert 1200 <= volumes[LABEL_LIVER] <= 2000, volumes
    assert 150 <= volumes[LABEL_SPLEEN] <= 400, volumes
    assert 250 <= volumes[LABEL_KIDNEY] <= 450, volumes
    # Every organ lies wholly inside the scan: no label on the first or last slice.
    assert not labels.array[[0, -1]].any()
    hu = ct.array
    means = {v: float(hu[labels.array == v].mean()) for v in volumes}
    assert 45 <= means[LABEL_LIVER] <= 75 and 30 <= means[LABEL_SPLEEN] <= 60 and 15 <= means[LABEL_KIDNEY] <= 45
    assert hu.max() >= 900  # cortical bone
    assert (hu < -900).mean() > 0.2  # air around the body


@pytest.mark.parametrize("seed", SEEDS)
def test_left_and_right(seed: int) -> None:
    """LPS x grows to the patient's left: the liver is at negative x, the spleen at positive x."""
    ct, labels = make_phantom(COARSE, seed)
    body = ct.array > -500
    body_centre = ct.index_to_lps(np.argwhere(body).mean(axis=0))
    liver, spleen = _centroid_lps(labels, LABEL_LIVER), _centroid_lps(labels, LABEL_SPLEEN)
    assert liver[0] < body_centre[0] - 20 and spleen[0] > body_centre[0] + 20
    kidneys, n = ndimage.label(labels.array == LABEL_KIDNEY)
    assert n == 2
    xs = sorted(ct.index_to_lps(np.argwhere(kidneys == k).mean(axis=0))[0] for k in (1, 2))
    assert xs[0] < body_centre[0] < xs[1]
    kidney_centre = _centroid_lps(labels, LABEL_KIDNEY)
    assert kidney_centre[1] > body_centre[1]  # posterior: LPS y grows backwards


def _noise_in_liver(ct: Volume, labels: Volume) -> float:
    core = ndimage.binary_erosion(labels.array == LABEL_LIVER, iterations=2)
    return float(ct.array[core].std())


def test_sites_differ_in_spacing_and_noise() -> None:
    measured = {}
    for site in DEFAULT_SITES:
        ct, labels = make_phantom(site, 3)
        assert ct.spacing[0] == site.slice_spacing_mm
        measured[site.name] = _noise_in_liver(ct, labels)
        assert measured[site.name] == pytest.approx(site.noise_hu, rel=0.15)
    assert len({s.slice_spacing_mm for s in DEFAULT_SITES}) == 3
    assert len({s.field_of_view_mm for s in DEFAULT_SITES}) == 3
    assert measured["SITEC"] > measured["SITEA"] > measured["SITEB"]


def test_oblique_grid_samples_the_same_anatomy() -> None:
    oblique = DEFAULT_SITES[2]
    assert oblique.tilt_deg or oblique.rotation_deg
    straight = replace(oblique, tilt_deg=0.0, rotation_deg=0.0)
    ct_o, lab_o = make_phantom(oblique, 11)
    ct_s, lab_s = make_phantom(straight, 11)
    assert not np.allclose(ct_o.direction, ct_s.direction)
    voxel_mm = max(oblique.slice_spacing_mm, oblique.pixel_spacing_mm)
    for value in (LABEL_LIVER, LABEL_SPLEEN, LABEL_KIDNEY):
        shift = np.linalg.norm(_centroid_lps(lab_o, value) - _centroid_lps(lab_s, value))
        assert shift < voxel_mm, (value, shift)
        assert _ml(lab_o, value) == pytest.approx(_ml(lab_s, value), rel=0.03)


def test_site_profiles_beyond_defaults_are_derived_deterministically() -> None:
    assert site_profiles(2) == DEFAULT_SITES[:2]
    five = site_profiles(5)
    assert five == site_profiles(5)
    assert [s.name for s in five] == ["SITEA", "SITEB", "SITEC", "SITED", "SITEE"]
    assert five[3].noise_hu != DEFAULT_SITES[0].noise_hu
    with pytest.raises(ConfigurationError, match="n_sites"):
        site_profiles(27)


@pytest.mark.parametrize("change", [
    {"slice_spacing_mm": 0.0}, {"matrix": (256,)}, {"field_of_view_mm": 50.0}, {"noise_hu": -1.0},
    {"tilt_deg": 45.0}, {"name": "SITE A"},
])
def test_invalid_profiles_are_refused(change: dict) -> None:
    with pytest.raises(ConfigurationError, match="SiteProfile"):
        replace(DEFAULT_SITES[0], **change)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_invalid_seed_is_refused(seed: object) -> None:
    with pytest.raises(ConfigurationError, match="seed"):
        make_phantom(DEFAULT_SITES[1], seed)  # type: ignore[arg-type]
