"""Synthetic CT-like abdominal phantoms with ground-truth organ labels.

The anatomy of one synthetic patient is drawn from a seed in patient space (LPS,
millimetres: x to the patient's Left, y Posterior, z Superior), independently of
any scanner. It is then sampled on a site's voxel grid (:class:`SiteProfile`),
so the same patient can be imaged with any spacing, field of view and
orientation, and the labels stay where the anatomy is. Sites differ in slice
spacing, field of view, noise and (one of them) an oblique grid; the profiles
(:class:`SiteProfile`, :data:`DEFAULT_SITES`, :func:`site_profiles`) are defined in
:mod:`medimg_kernel.phantom_sites` and importable from here.

Each structure is a deformed ellipsoid: a point with normalised organ
coordinates ``(u, v, w)`` is inside when
``sqrt(u² + (v² + w²) / t²) < 1 + p(u, v, w)``, where ``t = 1 - taper·u``
narrows the organ along its first axis and ``p`` is a random low-order
polynomial (a smooth, low-frequency shape change). Organ sizes are calibrated
to target volumes (mL) on a fixed 4 mm patient-space lattice, so volumes do
not depend on the site. The image adds a partial-volume blur (box slice
profile plus an in-plane point-spread function) and Gaussian noise.

Everything here is synthetic; no real patient data is used.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import ConfigurationError
# The site profiles are defined in phantom_sites.py and re-exported: they import from here too.
from .phantom_sites import DEFAULT_SITES as DEFAULT_SITES
from .phantom_sites import SiteProfile as SiteProfile
from .phantom_sites import site_profiles as site_profiles
from .volume import Volume

logger = logging.getLogger(__name__)

# Tissue codes, in increasing priority: an organ overwrites only codes below its own.
AIR, FAT, MUSCLE, VISCERA, LIVER, SPLEEN, KIDNEY, AORTA, CANCELLOUS, CORTICAL, DISC = range(11)

# Mean attenuation of each tissue code (HU, unenhanced abdomen).
TISSUE_HU = np.array([
    -1000.0,  # AIR outside the body
    -100.0,   # FAT subcutaneous
    50.0,     # MUSCLE abdominal wall and paraspinal muscles
    -30.0,    # VISCERA mesenteric fat and bowel between organs, averaged
    60.0,     # LIVER
    45.0,     # SPLEEN
    30.0,     # KIDNEY renal parenchyma
    40.0,     # AORTA unenhanced blood
    400.0,    # CANCELLOUS vertebral body interior
    1000.0,   # CORTICAL vertebral shell and spinous process
    80.0,     # DISC intervertebral disc
], dtype=np.float32)
ORGAN_HU_SD = 5.0  # per-study SD (HU) of liver, spleen and kidney means

#: Label values of the ground truth, and the segment labels in that order.
LABEL_LIVER, LABEL_SPLEEN, LABEL_KIDNEY = 1, 2, 3
SEGMENT_LABELS = ("liver", "spleen", "kidney")
_LABEL_OF_TISSUE = np.zeros(len(TISSUE_HU), dtype=np.uint8)
_LABEL_OF_TISSUE[[LIVER, SPLEEN, KIDNEY]] = [LABEL_LIVER, LABEL_SPLEEN, LABEL_KIDNEY]

# Target organ volumes (mL), drawn uniformly per patient; kidney is per kidney.
LIVER_ML = (1350.0, 1850.0)
SPLEEN_ML = (190.0, 340.0)
KIDNEY_ML = (145.0, 200.0)
CALIBRATION_MM = 4.0  # lattice spacing of the organ-volume calibration
CALIBRATION_PASSES = 3

# Body habitus (mm) and placement in the scanner.
BODY_HALF_WIDTH_MM = (140.0, 165.0)
BODY_HALF_DEPTH_MM = (100.0, 120.0)
BODY_CC_RADIUS_MM = 800.0  # an ellipsoid this long is a gently tapering cylinder over the scan
FAT_MM = (10.0, 30.0)  # subcutaneous fat thickness
MUSCLE_MM = (8.0, 14.0)  # abdominal wall thickness
OFF_CENTRE_SD_MM = (8.0, 10.0)  # body centre off the isocentre, x and y
TABLE_Z_MM = -250.0  # patient z of the renal hila for a centred patient
TABLE_Z_SD_MM = 20.0
SCAN_CENTRE_SD_MM = 6.0  # the technologist's scan centre around the organs' middle
SHAPE_SD = 0.06  # SD of each deformation coefficient (fraction of the radius)
BODY_SHAPE_SD = 0.03
PSF_SIGMA_MM = 0.6  # in-plane point-spread function of a soft-tissue kernel
STORED_HU_RANGE = (-1024, 3071)


# ---------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _Blob:
    """A deformed ellipsoid in LPS mm; ``axes`` rows are its own unit axes."""

    code: int
    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    taper: float = 0.0
    coeffs: np.ndarray = field(default_factory=lambda: np.zeros(7))
    floor: int = VISCERA  # overwrites only tissue codes in [floor, code)

    def scaled(self, factor: float) -> _Blob:
        return replace(self, radii=self.radii * factor)

    def half_extent(self) -> np.ndarray:
        """Conservative half-size (mm) of its axis-aligned LPS bounding box."""
        reach = self.radii * (1 + abs(self.taper)) * (1 + 1.5 * np.abs(self.coeffs).sum())
        return np.sqrt(((reach[:, None] * self.axes) ** 2).sum(axis=0)) + 2.0


@dataclass(frozen=True)
class _Anatomy:
    body: _Blob
    cavity: _Blob
    fat_fraction: float  # fat layer thickness / body radius
    structures: tuple[_Blob, ...]  # painted in order after the body layers
    disc_period_mm: float
    disc_phase_mm: float
    scan_centre: np.ndarray  # LPS mm
    tissue_hu: np.ndarray


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rows = rotated x, y, z unit vectors (angles in degrees, applied x, y then z)."""
    ax, ay, az = np.radians([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    my = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    mz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return (mz @ my @ mx).T


def _blob(rng: np.random.Generator, code: int, centre: tuple[float, float, float], radii: tuple[float, float, float],
          angles: tuple[float, float, float] = (0.0, 0.0, 0.0), *, taper: float = 0.0, shape_sd: float = SHAPE_SD,
          floor: int = VISCERA) -> _Blob:
    return _Blob(code, np.asarray(centre, float), _rotation(*angles), np.asarray(radii, float), taper,
                 rng.normal(0.0, shape_sd, 7) if shape_sd else np.zeros(7), floor)


def _sized(blob: _Blob, target_ml: float) -> _Blob:
    """``blob`` scaled so that its undeformed volume is ``target_ml``."""
    return blob.scaled((target_ml / _sized_ml(blob)) ** (1 / 3))


def _organs(rng: np.random.Generator, cx: float, cy: float, zr: float, half_width: float,
            half_depth: float) -> tuple[_Blob, ...]:
    """Spine, muscles, liver, spleen, kidneys and aorta around the body centre (cx, cy), hila at zr.

    This function is the anatomical layout table: centres are mm offsets from the
    vertebral body ``(sx, sy)`` or fractions of the cavity half-size, radii are mm
    (or proportions, scaled to volumes drawn from ``LIVER_ML`` etc.), angles are
    degrees about LPS x, y, z. Long structures (spine, aorta, muscles) are
    ellipsoids ``BODY_CC_RADIUS_MM`` long, i.e. cylinders over the scan.
    """
    n, u = rng.normal, rng.uniform
    sx, sy = cx + n(0, 2), cy + 0.45 * half_depth  # vertebral body centre
    side = 55.0 + n(0, 4)
    return (
        *(_blob(rng, MUSCLE, (sx + s * 38, sy + 30, zr), (28, 22, BODY_CC_RADIUS_MM), shape_sd=0.02, floor=MUSCLE)
          for s in (-1, 1)),  # paraspinal muscles
        _sized(_blob(rng, LIVER, (cx - 0.3 * half_width, cy - 12 + n(0, 4), zr + 55 + n(0, 6)),
                     (1.0, 0.85, 0.7), (n(0, 4), n(0, 4), n(0, 5)), taper=0.5 + n(0, 0.05)), u(*LIVER_ML)),
        _sized(_blob(rng, SPLEEN, (cx + 0.55 * half_width, cy + 0.3 * half_depth, zr + 50 + n(0, 6)),
                     (1.0, 0.55, 0.38), (n(-25, 5), n(0, 5), 60 + n(0, 8))), u(*SPLEEN_ML)),
        _sized(_blob(rng, KIDNEY, (sx - side, sy + n(0, 4), zr - 4 + n(0, 5)), (0.55, 0.45, 1.0),
                     (n(-12, 4), n(-12, 4), n(-25, 6)), floor=MUSCLE), u(*KIDNEY_ML)),  # right kidney, lower
        _sized(_blob(rng, KIDNEY, (sx + side, sy + n(0, 4), zr + 6 + n(0, 5)), (0.55, 0.45, 1.0),
                     (n(-12, 4), n(12, 4), n(25, 6)), floor=MUSCLE), u(*KIDNEY_ML)),
        _blob(rng, AORTA, (sx + 15, sy - 34, zr), (11 + n(0, 1), 11, BODY_CC_RADIUS_MM), shape_sd=0.0),
        _blob(rng, CANCELLOUS, (sx, sy, zr), (22 + n(0, 1.5), 18, BODY_CC_RADIUS_MM), shape_sd=0.0, floor=AIR),
        _blob(rng, CORTICAL, (sx, sy + 42, zr), (6, 18, BODY_CC_RADIUS_MM), shape_sd=0.0, floor=AIR),
    )


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """One synthetic patient in LPS mm, before organ-volume calibration."""
    u, n = rng.uniform, rng.normal
    half_width, half_depth = u(*BODY_HALF_WIDTH_MM), u(*BODY_HALF_DEPTH_MM)
    fat, muscle = u(*FAT_MM), u(*MUSCLE_MM)
    cx, cy, zr = n(0, OFF_CENTRE_SD_MM[0]), n(0, OFF_CENTRE_SD_MM[1]), TABLE_Z_MM + n(0, TABLE_Z_SD_MM)
    body = _blob(rng, FAT, (cx, cy, zr), (half_width, half_depth, BODY_CC_RADIUS_MM), shape_sd=BODY_SHAPE_SD)
    inset = fat + muscle
    cavity = replace(body, code=VISCERA, centre=body.centre + [0, -8, 0],
                     radii=body.radii - [inset, inset + 8, 0])
    tissue_hu = TISSUE_HU.copy()
    tissue_hu[[LIVER, SPLEEN, KIDNEY]] += n(0, ORGAN_HU_SD, 3)
    return _Anatomy(
        body=body, cavity=cavity, fat_fraction=fat / min(half_width, half_depth),
        structures=_organs(rng, cx, cy, zr, half_width - inset, half_depth - inset),
        disc_period_mm=u(30, 36), disc_phase_mm=u(0, 36),
        scan_centre=np.array([0.0, 0.0, n(0, SCAN_CENTRE_SD_MM)]),  # z: offset from the organs' middle
        tissue_hu=tissue_hu,
    )


# ---------------------------------------------------------------- sampling


@dataclass(frozen=True)
class _Grid:
    """Voxel grid with :class:`~medimg_kernel.volume.Volume` conventions (z, y, x; LPS mm)."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @property
    def steps(self) -> np.ndarray:
        """Row ``a``: LPS displacement (mm) of one step along array axis ``a``."""
        return self.direction * self.spacing[:, None]


Box = tuple[slice, slice, slice]


def _box(grid: _Grid, blob: _Blob) -> Box | None:
    """Index ranges of ``grid`` that can contain ``blob``; ``None`` if it misses the grid."""
    signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
    corners = blob.centre + signs * blob.half_extent()
    index = (corners - grid.origin) @ np.linalg.inv(grid.steps)
    lo = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, grid.shape)
    if np.any(lo >= hi):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _project(grid: _Grid, box: Box, vector: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``vector · (p - point)`` for the LPS position ``p`` of every voxel in ``box`` (float32)."""
    per_step = grid.steps @ vector
    offset = float(vector @ (grid.origin - point))
    k, j, i = (np.arange(s.start, s.stop, dtype=np.float32) * np.float32(d) for s, d in zip(box, per_step))
    return (k[:, None, None] + np.float32(offset)) + j[None, :, None] + i[None, None, :]


def _level(grid: _Grid, blob: _Blob, box: Box) -> np.ndarray:
    """Squared normalised radius over ``box``: below 1 inside the blob, 1 on its surface."""
    u, v, w = (_project(grid, box, blob.axes[m] / blob.radii[m], blob.centre) for m in range(3))
    q = np.square(v)
    q += np.square(w)
    if blob.taper:
        t = np.float32(1) - np.float32(blob.taper) * u
        np.maximum(t, np.float32(0.2), out=t)
        q /= np.square(t, out=t)
    q += np.square(u)
    if np.any(blob.coeffs):  # 1 + p(u, v, w), a smooth deformation of the radius, evaluated in Horner form
        c = blob.coeffs.astype(np.float32)
        p = c[3] * v + c[5] * w + c[6] * u + c[0]
        p *= u
        p += (c[4] * w - c[6] * v + c[1]) * v
        p += c[2] * w + 1
        np.maximum(p, np.float32(0.05), out=p)
        q /= np.square(p, out=p)
    return q


VERTEBRAL_SHELL_FRACTION = 0.9  # cancellous bone inside 90 % of the vertebral body radius
DISC_MM = 7.0  # intervertebral disc height


def _paint(tissue: np.ndarray, grid: _Grid, blob: _Blob, anatomy: _Anatomy) -> None:
    """Overwrite tissue codes in ``[blob.floor, blob.code)`` inside ``blob``, in place."""
    box = _box(grid, blob)
    if box is None:
        return
    q, view = _level(grid, blob, box), tissue[box]
    if blob.code != CANCELLOUS:
        np.copyto(view, blob.code, where=(q < 1) & (view >= blob.floor) & (view < blob.code))
        return
    # Vertebral column: cortical shell, cancellous interior, discs at regular heights.
    z = _project(grid, box, np.array([0.0, 0.0, 1.0]), blob.centre)
    disc = np.mod(z - anatomy.disc_phase_mm, anatomy.disc_period_mm) < DISC_MM
    inside = q < 1
    np.copyto(view, CORTICAL, where=inside)
    np.copyto(view, CANCELLOUS, where=(q < VERTEBRAL_SHELL_FRACTION**2) & ~disc)
    np.copyto(view, DISC, where=inside & disc)


def _sample_tissue(anatomy: _Anatomy, grid: _Grid) -> np.ndarray:
    """Tissue code (uint8) at the centre of every voxel of ``grid``."""
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    box = _box(grid, anatomy.body)
    if box is None:
        return tissue
    q_body = _level(grid, anatomy.body, box)
    view = tissue[box]
    view += q_body < 1  # FAT
    inner = q_body < np.float32((1 - anatomy.fat_fraction) ** 2)
    view += inner  # MUSCLE
    view += inner & (_level(grid, anatomy.cavity, box) < 1)  # VISCERA
    for blob in anatomy.structures:
        _paint(tissue, grid, blob, anatomy)
    return tissue


def _calibrated(anatomy: _Anatomy) -> _Anatomy:
    """Scale liver, spleen and kidneys so their sampled volumes match their drawn targets.

    Volumes are counted on a fixed, axis-aligned ``CALIBRATION_MM`` lattice in
    patient space (so the result does not depend on any site); clipping by the
    abdominal wall and by organs of higher priority is therefore compensated.
    """
    codes = (LIVER, SPLEEN, KIDNEY)
    target = {c: sum(_sized_ml(b) for b in anatomy.structures if b.code == c) for c in codes}
    for _ in range(CALIBRATION_PASSES):  # the last pass also centres the scan on the organs
        organs = [b for b in anatomy.structures if b.code in codes]
        lo = np.min([b.centre - b.half_extent() for b in organs], axis=0)
        hi = np.max([b.centre + b.half_extent() for b in organs], axis=0)
        shape = tuple(int(n) for n in np.ceil((hi - lo)[::-1] / CALIBRATION_MM) + 1)
        lattice = _Grid(shape, np.full(3, CALIBRATION_MM), lo, np.eye(3)[::-1])  # type: ignore[arg-type]
        tissue = _sample_tissue(anatomy, lattice)
        counts = np.bincount(tissue.ravel(), minlength=len(TISSUE_HU))
        factor = {c: (target[c] / max(counts[c] * CALIBRATION_MM**3 / 1000.0, 1.0)) ** (1 / 3) for c in codes}
        anatomy = replace(anatomy, structures=tuple(
            b.scaled(factor[b.code]) if b.code in codes else b for b in anatomy.structures))
    slices = np.flatnonzero(np.isin(tissue, codes).any(axis=(1, 2)))
    middle_z = lo[2] + (slices[0] + slices[-1]) / 2 * CALIBRATION_MM
    return replace(anatomy, scan_centre=anatomy.scan_centre + [0.0, 0.0, middle_z])


def _sized_ml(blob: _Blob) -> float:
    """Undeformed volume (mL) of a tapered ellipsoid."""
    return math.pi * float(np.prod(blob.radii)) * (4 / 3 + 4 * blob.taper**2 / 15) / 1000.0


# ---------------------------------------------------------------- imaging


def _grid(profile: SiteProfile, centre: np.ndarray) -> _Grid:
    """The site's voxel grid, centred on ``centre`` (LPS mm), tilted and rotated as the profile says."""
    axes = _rotation(profile.tilt_deg, 0.0, profile.rotation_deg)  # rows: row dir, column dir, slice normal
    direction = axes[::-1]  # Volume rows: slice normal (z), column direction (y), row direction (x)
    shape = (profile.n_slices, *profile.matrix)
    spacing = np.array([profile.slice_spacing_mm, profile.pixel_spacing_mm, profile.pixel_spacing_mm])
    origin = centre - ((np.asarray(shape) - 1) / 2 * spacing) @ direction
    return _Grid(shape, spacing, origin, direction)  # type: ignore[arg-type]


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


def _image(anatomy: _Anatomy, tissue: np.ndarray, grid: _Grid, noise_hu: float,
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
    anatomy = _calibrated(_draw_anatomy(np.random.default_rng(anatomy_seed)))
    grid = _grid(profile, anatomy.scan_centre)
    tissue = _sample_tissue(anatomy, grid)
    ct = Volume(_image(anatomy, tissue, grid, profile.noise_hu, np.random.default_rng(noise_seed)),
                tuple(grid.spacing), tuple(grid.origin), grid.direction, modality="CT")  # type: ignore[arg-type]
    logger.debug("phantom seed=%d site=%s shape=%s", seed, profile.name, grid.shape)
    return ct, replace(ct, array=_LABEL_OF_TISSUE[tissue], modality="")
