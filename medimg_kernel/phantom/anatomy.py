"""The anatomy of one synthetic patient: tissue codes, structures as deformed ellipsoids, drawn from a seed.

Everything is in patient space (LPS, millimetres: x to the patient's Left, y Posterior, z
Superior), independently of any scanner. Each structure is a deformed ellipsoid
(:class:`Blob`): a point with normalised organ coordinates ``(u, v, w)`` is inside when
``sqrt(u² + (v² + w²) / t²) < 1 + p(u, v, w)``, where ``t = 1 - taper·u`` narrows the organ
along its first axis and ``p`` is a random low-order polynomial (a smooth, low-frequency
shape change). :func:`draw_anatomy` draws one patient; organ sizes are calibrated to their
target volumes by :func:`medimg_kernel.phantom.sampling.calibrated`.

Everything here is synthetic; no real patient data is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Blob", "Anatomy", "draw_anatomy", "rotation", "sized_ml", "LABEL_OF_TISSUE"]

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
LABEL_OF_TISSUE = np.zeros(len(TISSUE_HU), dtype=np.uint8)
LABEL_OF_TISSUE[[LIVER, SPLEEN, KIDNEY]] = [LABEL_LIVER, LABEL_SPLEEN, LABEL_KIDNEY]

# Target organ volumes (mL), drawn uniformly per patient; kidney is per kidney.
LIVER_ML = (1350.0, 1850.0)
SPLEEN_ML = (190.0, 340.0)
KIDNEY_ML = (145.0, 200.0)

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


@dataclass(frozen=True)
class Blob:
    """A deformed ellipsoid in LPS mm; ``axes`` rows are its own unit axes."""

    code: int
    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    taper: float = 0.0
    coeffs: np.ndarray = field(default_factory=lambda: np.zeros(7))
    floor: int = VISCERA  # overwrites only tissue codes in [floor, code)

    def scaled(self, factor: float) -> Blob:
        return replace(self, radii=self.radii * factor)

    def half_extent(self) -> np.ndarray:
        """Conservative half-size (mm) of its axis-aligned LPS bounding box."""
        reach = self.radii * (1 + abs(self.taper)) * (1 + 1.5 * np.abs(self.coeffs).sum())
        return np.sqrt(((reach[:, None] * self.axes) ** 2).sum(axis=0)) + 2.0


@dataclass(frozen=True)
class Anatomy:
    body: Blob
    cavity: Blob
    fat_fraction: float  # fat layer thickness / body radius
    structures: tuple[Blob, ...]  # painted in order after the body layers
    disc_period_mm: float
    disc_phase_mm: float
    scan_centre: np.ndarray  # LPS mm
    tissue_hu: np.ndarray


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rows = rotated x, y, z unit vectors (angles in degrees, applied x, y then z)."""
    ax, ay, az = np.radians([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    my = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    mz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return (mz @ my @ mx).T


def _blob(rng: np.random.Generator, code: int, centre: tuple[float, float, float], radii: tuple[float, float, float],
          angles: tuple[float, float, float] = (0.0, 0.0, 0.0), *, taper: float = 0.0, shape_sd: float = SHAPE_SD,
          floor: int = VISCERA) -> Blob:
    return Blob(code, np.asarray(centre, float), rotation(*angles), np.asarray(radii, float), taper,
                 rng.normal(0.0, shape_sd, 7) if shape_sd else np.zeros(7), floor)


def _sized(blob: Blob, target_ml: float) -> Blob:
    """``blob`` scaled so that its undeformed volume is ``target_ml``."""
    return blob.scaled((target_ml / sized_ml(blob)) ** (1 / 3))


def _organs(rng: np.random.Generator, cx: float, cy: float, zr: float, half_width: float,
            half_depth: float) -> tuple[Blob, ...]:
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


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
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
    return Anatomy(
        body=body, cavity=cavity, fat_fraction=fat / min(half_width, half_depth),
        structures=_organs(rng, cx, cy, zr, half_width - inset, half_depth - inset),
        disc_period_mm=u(30, 36), disc_phase_mm=u(0, 36),
        scan_centre=np.array([0.0, 0.0, n(0, SCAN_CENTRE_SD_MM)]),  # z: offset from the organs' middle
        tissue_hu=tissue_hu,
    )


def sized_ml(blob: Blob) -> float:
    """Undeformed volume (mL) of a tapered ellipsoid."""
    return math.pi * float(np.prod(blob.radii)) * (4 / 3 + 4 * blob.taper**2 / 15) / 1000.0
