"""Geometry of a stack of single-frame slices: slice normal, order, spacing, direction.

Used by :func:`medimg_kernel.series.read_series` (and, for the slice order, by
:mod:`medimg_kernel.seg.frames`). All lengths are in millimetres, patient
coordinates LPS.

* The slice normal is the cross product of the row and column direction cosines of
  ImageOrientationPatient; slices are sorted by the projection of ImagePositionPatient
  on it, ascending, whatever the input order (:func:`slice_order`).
* The slice spacing is the distance between the first and last projected positions
  divided by the number of steps, never SliceThickness or SpacingBetweenSlices (those
  are used only for a single-slice series: SpacingBetweenSlices, else SliceThickness,
  else 1 mm with a warning).
* Tolerances: orientation cosines agree within ``ORIENTATION_ATOL``; every slice lies
  within ``max(POSITION_ATOL_MM, SPACING_RTOL * spacing)`` of its place on the regular
  grid along the normal, and within ``max(POSITION_ATOL_MM, INPLANE_RTOL * pixel
  spacing)`` of the first slice in the image plane (so positions rounded to ~6
  significant digits pass); slices closer than ``POSITION_ATOL_MM`` are duplicates; a
  step larger than ``GAP_FACTOR`` median steps means missing slices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import MixedSeriesError, SeriesGeometryError
from .instance import Instance

logger = logging.getLogger(__name__)

__all__ = [
    "slice_order", "stack_geometry", "StackGeometry",
    "ORIENTATION_ATOL", "POSITION_ATOL_MM", "SPACING_RTOL", "INPLANE_RTOL", "GAP_FACTOR",
]

#: Largest difference between slices' ImageOrientationPatient cosines (unitless).
ORIENTATION_ATOL = 1e-4
#: Position tolerance along the normal (mm); slices closer than this are duplicates.
POSITION_ATOL_MM = 0.02
#: Tolerance of a slice's distance from its regular-grid place, relative to the spacing.
SPACING_RTOL = 0.02
#: In-plane shift allowed between slices, as a fraction of the pixel spacing.
INPLANE_RTOL = 0.1
#: A step larger than this many median steps is a gap (missing slices).
GAP_FACTOR = 1.5


def slice_order(positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Indices that sort slices along ``normal``, ascending; equal projections keep input order.

    Parameters
    ----------
    positions
        ``(n, 3)`` ImagePositionPatient of each slice (LPS mm).
    normal
        The slice normal (row cosine × column cosine), a unit LPS vector.
    """
    return np.argsort(positions @ normal, kind="stable")


@dataclass(frozen=True)
class StackGeometry:
    """Where the slices of a stack go: their order along the normal, the spacing, origin and direction."""

    order: list[int]  # input indices in ascending position along the normal
    spacing: tuple[float, float, float]  # (dz, dy, dx) mm
    origin: tuple[float, float, float]  # LPS mm of the first slice's first voxel
    direction: np.ndarray  # rows: normal, column cosine, row cosine


def stack_geometry(instances: Sequence[Instance], uid: str) -> StackGeometry:
    """Sort slices along the normal and derive spacing, origin and direction.

    Parameters
    ----------
    instances
        The checked instances of one series, in any order.
    uid
        The SeriesInstanceUID, for error messages.

    Returns
    -------
    StackGeometry
        ``order`` (input indices along the normal), ``spacing`` ``(dz, dy, dx)`` mm,
        ``origin`` (LPS mm of the first slice's first voxel) and ``direction``.

    Raises
    ------
    MixedSeriesError
        Orientations or pixel spacings differ between slices.
    SeriesGeometryError
        Missing geometry, duplicate or missing slices, uneven spacing, sheared stacks.
    """
    direction = _orientation(instances, uid)
    dy, dx = _pixel_spacing(instances, uid)
    positions = np.array([_floats(i, "ImagePositionPatient", 3, uid) for i in instances])
    order = slice_order(positions, direction[0])
    ordered = [instances[k] for k in order]
    positions = positions[order]
    dz = _slice_spacing(positions, direction[0], ordered, uid)
    _check_in_plane(positions, direction, (dy, dx), ordered, uid)
    return StackGeometry([int(k) for k in order], (dz, dy, dx), tuple(positions[0]), direction)


def _floats(instance: Instance, keyword: str, count: int, uid: str) -> np.ndarray:
    """``count`` finite numbers of a decimal-string attribute."""
    try:
        numbers = np.array([float(v) for v in instance.attrs.get(keyword, [])], dtype=float)
    except ValueError as exc:
        raise SeriesGeometryError(uid, f"{instance.label}: {keyword} is not numeric") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise SeriesGeometryError(uid, f"{instance.label}: {keyword} is missing or does not hold {count} "
                                       "numbers; read_series needs the geometry of every slice")
    return numbers


def _orientation(instances: Sequence[Instance], uid: str) -> np.ndarray:
    """Orthonormal direction matrix (rows: normal, column cosine, row cosine) shared by all slices."""
    cosines = np.array([_floats(i, "ImageOrientationPatient", 6, uid) for i in instances])
    deviation = np.abs(cosines - cosines[0]).max(axis=1)
    if deviation.max() > ORIENTATION_ATOL:
        k = int(deviation.argmax())
        raise MixedSeriesError(uid, f"ImageOrientationPatient differs between slices: {instances[k].label} "
                                    f"has {_fmt(cosines[k])}, {instances[0].label} has {_fmt(cosines[0])}")
    row, col = cosines.mean(axis=0)[:3], cosines.mean(axis=0)[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise SeriesGeometryError(uid, f"ImageOrientationPatient {_fmt(cosines[0])} is not two orthogonal "
                                       "unit vectors")
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    return np.stack([np.cross(row, col), col, row])


def _pixel_spacing(instances: Sequence[Instance], uid: str) -> tuple[float, float]:
    values = np.array([_floats(i, "PixelSpacing", 2, uid) for i in instances])
    if np.any(values <= 0):
        raise SeriesGeometryError(uid, f"{instances[0].label}: PixelSpacing must be positive")
    deviation = np.abs(values - values[0]).max(axis=1) / values[0].min()
    if deviation.max() > 1e-4:
        k = int(deviation.argmax())
        raise MixedSeriesError(uid, f"PixelSpacing differs between slices: {instances[k].label} has "
                                    f"{_fmt(values[k])} mm, {instances[0].label} has {_fmt(values[0])} mm")
    return float(values[0][0]), float(values[0][1])


def _slice_spacing(positions: np.ndarray, normal: np.ndarray, ordered: Sequence[Instance], uid: str) -> float:
    """Spacing along the normal (mm) of sorted slices; refuses duplicates, gaps and uneven steps."""
    if len(positions) == 1:
        return _single_slice_spacing(ordered[0], uid)
    along = positions @ normal
    steps = np.diff(along)
    labels = [i.label for i in ordered]
    if steps.min() <= POSITION_ATOL_MM:
        k = int(steps.argmin())
        raise SeriesGeometryError(uid, f"duplicate slice position {along[k]:.3f} mm along the normal (LPS "
                                       f"{_fmt(positions[k])}) in {labels[k]} and {labels[k + 1]}; the series "
                                       "may hold several acquisitions or temporal positions")
    median = float(np.median(steps))
    if steps.max() > GAP_FACTOR * median:
        k = int(steps.argmax())
        raise SeriesGeometryError(uid, f"missing slice(s): a {steps[k]:.3f} mm gap between positions "
                                       f"{along[k]:.3f} and {along[k + 1]:.3f} mm along the normal (LPS "
                                       f"{_fmt(positions[k])} in {labels[k]} and {_fmt(positions[k + 1])} in "
                                       f"{labels[k + 1]}) where the median spacing is {median:.3f} mm")
    spacing = float(along[-1] - along[0]) / (len(along) - 1)
    misplacement = np.abs(along - along[0] - spacing * np.arange(len(along)))
    if misplacement.max() > max(POSITION_ATOL_MM, SPACING_RTOL * spacing):
        k = int(misplacement.argmax())
        raise SeriesGeometryError(uid, f"non-uniform slice spacing: steps range from {steps.min():.4f} to "
                                       f"{steps.max():.4f} mm; {labels[k]} lies {misplacement[k]:.4f} mm off "
                                       f"the regular {spacing:.4f} mm grid")
    return spacing


def _single_slice_spacing(instance: Instance, uid: str) -> float:
    """A single slice has no neighbour: SpacingBetweenSlices, else SliceThickness, else 1 mm."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            spacing = float(instance.text(keyword) or "nan")
        except ValueError:
            continue
        if np.isfinite(spacing) and spacing > 0:
            return spacing
    logger.warning("series %s: single slice without SpacingBetweenSlices or SliceThickness; using 1 mm", uid)
    return 1.0


def _check_in_plane(positions: np.ndarray, direction: np.ndarray, pixel_spacing: tuple[float, float],
                    ordered: Sequence[Instance], uid: str) -> None:
    """Slices must be stacked straight along the normal (no shear such as gantry tilt)."""
    shift = np.abs((positions - positions[0]) @ direction[1:].T)  # (n, 2): along columns, along rows
    tolerance = np.maximum(POSITION_ATOL_MM, INPLANE_RTOL * np.asarray(pixel_spacing))
    if np.any(shift > tolerance):
        k = int((shift / tolerance).max(axis=1).argmax())
        raise SeriesGeometryError(uid, f"slices are not stacked along the normal: {ordered[k].label} is "
                                       f"shifted {_fmt(shift[k])} mm in-plane from {ordered[0].label} (gantry "
                                       "tilt or a sheared acquisition?); resample it before reading")


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
