"""Imaging a synthetic patient with one site's scanner: :func:`make_phantom`.

The anatomy (:mod:`.anatomy`) is sampled on the site's voxel grid (:mod:`.sampling`); the
image adds a partial-volume blur (box slice profile plus an in-plane point-spread function)
and Gaussian noise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np

from ..errors import ConfigurationError
from ..volume import Volume
from .anatomy import LABEL_OF_TISSUE, Anatomy, draw_anatomy, rotation
from .sampling import Grid, calibrated, sample_tissue
from .sites import SiteProfile

logger = logging.getLogger(__name__)

__all__ = ["make_phantom", "PSF_SIGMA_MM", "STORED_HU_RANGE"]

PSF_SIGMA_MM = 0.6  # in-plane point-spread function of a soft-tissue kernel
STORED_HU_RANGE = (-1024, 3071)


def _grid(profile: SiteProfile, centre: np.ndarray) -> Grid:
    """The site's voxel grid, centred on ``centre`` (LPS mm), tilted and rotated as the profile says."""
    axes = rotation(profile.tilt_deg, 0.0, profile.rotation_deg)  # rows: row dir, column dir, slice normal
    direction = axes[::-1]  # Volume rows: slice normal (z), column direction (y), row direction (x)
    shape = (profile.n_slices, *profile.matrix)
    spacing = np.array([profile.slice_spacing_mm, profile.pixel_spacing_mm, profile.pixel_spacing_mm])
    origin = centre - ((np.asarray(shape) - 1) / 2 * spacing) @ direction
    return Grid(shape, spacing, origin, direction)  # type: ignore[arg-type]


def _blur_axis(a: np.ndarray, axis: int, sigma_voxels: float) -> None:
    """In place, a 3-tap smoothing of variance ``sigma_voxels²`` along ``axis`` (edges replicated)."""
    w = np.float32(min(sigma_voxels**2 / 2, 0.25))
    if a.shape[axis] < 2 or w == 0:
        return
    b = np.moveaxis(a.copy(), axis, 0)
    m = np.moveaxis(a, axis, 0)
    m *= 1 - 2 * w
    m[1:] += w * b[:-1]
    m[:-1] += w * b[1:]
    m[0] += w * b[0]
    m[-1] += w * b[-1]


def _image(anatomy: Anatomy, tissue: np.ndarray, grid: Grid, noise_hu: float,
           rng: np.random.Generator) -> np.ndarray:
    """CT numbers (int16 HU): tissue means, partial-volume blur, Gaussian noise."""
    hu = anatomy.tissue_hu[tissue]
    box_sd2 = 1 / 12  # variance of a one-voxel box (averaging over the voxel / slice profile)
    for axis in range(3):
        psf = 0.0 if axis == 0 else PSF_SIGMA_MM / grid.spacing[axis]
        _blur_axis(hu, axis, math.sqrt(box_sd2 + psf**2))
    if noise_hu > 0:
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        noise *= np.float32(noise_hu)
        hu += noise
    np.rint(hu, out=hu)
    np.clip(hu, *STORED_HU_RANGE, out=hu)
    return hu.astype(np.int16)


def make_phantom(profile: SiteProfile, seed: int) -> tuple[Volume, Volume]:
    """Image one synthetic patient with one site's scanner.

    Parameters
    ----------
    profile
        The site: grid (spacing, matrix, field of view, tilt, rotation) and noise.
    seed
        Non-negative integer. The anatomy depends only on ``seed``, so the same
        seed with two profiles is the same patient scanned at two sites; the
        noise depends on ``seed`` too, and the result is bit-for-bit repeatable.

    Returns
    -------
    ct : Volume
        CT numbers in HU (``int16``), indexed ``[z, y, x]``, with LPS geometry
        (origin in mm, direction rows = axis unit vectors); ``modality="CT"``.
        The grid is centred laterally on the scanner isocentre (LPS x = y = 0)
        and cranio-caudally on the organs.
    labels : Volume
        Ground truth on the same grid (``uint8``): 0 background,
        :data:`LABEL_LIVER`, :data:`LABEL_SPLEEN`, :data:`LABEL_KIDNEY` (both kidneys).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed!r}")
    anatomy_seed, noise_seed = np.random.SeedSequence(int(seed)).spawn(2)
    anatomy = calibrated(draw_anatomy(np.random.default_rng(anatomy_seed)))
    grid = _grid(profile, anatomy.scan_centre)
    tissue = sample_tissue(anatomy, grid)
    ct = Volume(_image(anatomy, tissue, grid, profile.noise_hu, np.random.default_rng(noise_seed)),
                tuple(grid.spacing), tuple(grid.origin), grid.direction, modality="CT")  # type: ignore[arg-type]
    logger.debug("phantom seed=%d site=%s shape=%s", seed, profile.name, grid.shape)
    return ct, replace(ct, array=LABEL_OF_TISSUE[tissue], modality="")
