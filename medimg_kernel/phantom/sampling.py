"""Sampling an anatomy on a voxel grid: tissue codes at voxel centres, and organ-volume calibration.

A :class:`Grid` has :class:`~medimg_kernel.volume.Volume` conventions (z, y, x; LPS mm).
:func:`sample_tissue` paints the body layers and every structure, in priority order;
:func:`calibrated` scales the organs so that their volumes, counted on a fixed
``CALIBRATION_MM`` patient-space lattice, match their drawn targets (so volumes do not
depend on the site).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .anatomy import CANCELLOUS, CORTICAL, DISC, KIDNEY, LIVER, SPLEEN, TISSUE_HU, Anatomy, Blob, sized_ml

__all__ = ["Grid", "Box", "sample_tissue", "calibrated"]

CALIBRATION_MM = 4.0  # lattice spacing of the organ-volume calibration
CALIBRATION_PASSES = 3


@dataclass(frozen=True)
class Grid:
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


def _box(grid: Grid, blob: Blob) -> Box | None:
    """Index ranges of ``grid`` that can contain ``blob``; ``None`` if it misses the grid."""
    signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
    corners = blob.centre + signs * blob.half_extent()
    index = (corners - grid.origin) @ np.linalg.inv(grid.steps)
    lo = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, grid.shape)
    if np.any(lo >= hi):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _project(grid: Grid, box: Box, vector: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``vector · (p - point)`` for the LPS position ``p`` of every voxel in ``box`` (float32)."""
    per_step = grid.steps @ vector
    offset = float(vector @ (grid.origin - point))
    k, j, i = (np.arange(s.start, s.stop, dtype=np.float32) * np.float32(d) for s, d in zip(box, per_step))
    return (k[:, None, None] + np.float32(offset)) + j[None, :, None] + i[None, None, :]


def _level(grid: Grid, blob: Blob, box: Box) -> np.ndarray:
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


def _paint(tissue: np.ndarray, grid: Grid, blob: Blob, anatomy: Anatomy) -> None:
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


def sample_tissue(anatomy: Anatomy, grid: Grid) -> np.ndarray:
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


def calibrated(anatomy: Anatomy) -> Anatomy:
    """Scale liver, spleen and kidneys so their sampled volumes match their drawn targets.

    Volumes are counted on a fixed, axis-aligned ``CALIBRATION_MM`` lattice in
    patient space (so the result does not depend on any site); clipping by the
    abdominal wall and by organs of higher priority is therefore compensated.
    """
    codes = (LIVER, SPLEEN, KIDNEY)
    target = {c: sum(sized_ml(b) for b in anatomy.structures if b.code == c) for c in codes}
    for _ in range(CALIBRATION_PASSES):  # the last pass also centres the scan on the organs
        organs = [b for b in anatomy.structures if b.code in codes]
        lo = np.min([b.centre - b.half_extent() for b in organs], axis=0)
        hi = np.max([b.centre + b.half_extent() for b in organs], axis=0)
        shape = tuple(int(n) for n in np.ceil((hi - lo)[::-1] / CALIBRATION_MM) + 1)
        lattice = Grid(shape, np.full(3, CALIBRATION_MM), lo, np.eye(3)[::-1])  # type: ignore[arg-type]
        tissue = sample_tissue(anatomy, lattice)
        counts = np.bincount(tissue.ravel(), minlength=len(TISSUE_HU))
        factor = {c: (target[c] / max(counts[c] * CALIBRATION_MM**3 / 1000.0, 1.0)) ** (1 / 3) for c in codes}
        anatomy = replace(anatomy, structures=tuple(
            b.scaled(factor[b.code]) if b.code in codes else b for b in anatomy.structures))
    slices = np.flatnonzero(np.isin(tissue, codes).any(axis=(1, 2)))
    middle_z = lo[2] + (slices[0] + slices[-1]) / 2 * CALIBRATION_MM
    return replace(anatomy, scan_centre=anatomy.scan_centre + [0.0, 0.0, middle_z])
