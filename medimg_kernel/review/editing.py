"""Editing the labels under review: the view geometry, :class:`Edit`, :class:`Patch` and :class:`LabelEditor`.

The label volume being corrected lives here, in the kernel, as plain numpy (no widgets): the
viewer previews a brush stroke in the browser and sends it as an :class:`Edit`; the editor
rasterises it into a :class:`Patch` (flat indices + new values) that the caller sends back to
the viewer with ``SliceViewer.apply_patch``, and keeps a bounded undo/redo history.

View geometry
-------------
This module is the one place that defines the view coordinate system; ``viewer.js`` mirrors it
function by function (``viewShape``, ``viewToVoxel``, ``voxelToView``, ``polylinePixels``,
``discOffsets``) and ``tests/kernel/test_review_editing.py`` pins both to the same table.

Conventions
-----------
Volumes are indexed ``[z, y, x]`` as :class:`medimg_kernel.volume.Volume` arrays are: for an
axial series ``z`` increases toward patient superior (+S), ``y`` toward posterior (+P) and
``x`` toward patient left (+L), i.e. LPS. A *view* shows one 2-D plane; its pixels are
addressed ``(row, col)`` with row 0 at the top of the displayed image and col 0 at its left,
one pixel per voxel (the display scales rows and columns by the voxel spacing, which does
not change these coordinates):

========  ===========  ================  =======  ================================
view      slice index  row              col      display
========  ===========  ================  =======  ================================
axial     ``z``        ``y``            ``x``    anterior at top, patient right on
                                                 the image's left (radiological)
coronal   ``y``        ``nz - 1 - z``   ``x``    superior at top, patient right left
sagittal  ``x``        ``nz - 1 - z``   ``y``    superior at top, anterior left
========  ===========  ================  =======  ================================
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from medimg_kernel.errors import ConfigurationError

log = logging.getLogger(__name__)

View = Literal["axial", "coronal", "sagittal"]
#: The views, in the order the viewer lays them out.
VIEWS: tuple[View, ...] = ("axial", "coronal", "sagittal")

Shape3 = tuple[int, int, int]


def check_view(view: str) -> View:
    """Return ``view`` typed as :data:`View`; raise :class:`ConfigurationError` if unknown."""
    if view not in VIEWS:
        raise ConfigurationError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    return cast(View, view)


def view_shape(view: View, shape: Shape3) -> Shape3:
    """Number of slices, rows and columns of ``view`` over a volume of ``shape`` ``(nz, ny, nx)``."""
    nz, ny, nx = shape
    return {"axial": (nz, ny, nx), "coronal": (ny, nz, nx), "sagittal": (nx, nz, ny)}[check_view(view)]


def view_spacing(view: View, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """Height of a row and width of a column of ``view``, in mm, from ``(dz, dy, dx)``."""
    dz, dy, dx = spacing
    return {"axial": (dy, dx), "coronal": (dz, dx), "sagittal": (dz, dy)}[check_view(view)]


def view_to_voxel(
    view: View, slice_index: int, row: np.ndarray | int, col: np.ndarray | int, shape: Shape3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices ``(z, y, x)`` of view pixels ``(row, col)`` on slice ``slice_index``.

    Parameters
    ----------
    view
        ``"axial"``, ``"coronal"`` or ``"sagittal"`` (see the module's table).
    slice_index
        Index of the slice along the view's normal axis (``z``, ``y`` or ``x``).
    row, col
        Pixel coordinates in the view as displayed (row 0 at the top, col 0 at the left);
        scalars or arrays of the same shape. Not range-checked.
    shape
        ``(nz, ny, nx)`` of the volume.

    Returns
    -------
    z, y, x
        int64 arrays broadcast from ``row`` and ``col``.
    """
    nz = shape[0]
    r = np.asarray(row, dtype=np.int64)
    c = np.asarray(col, dtype=np.int64)
    s = np.full(np.broadcast(r, c).shape, slice_index, dtype=np.int64)
    r, c = np.broadcast_arrays(r, c)
    check_view(view)
    if view == "axial":
        return s, r.copy(), c.copy()
    if view == "coronal":
        return nz - 1 - r, s, c.copy()
    return nz - 1 - r, c.copy(), s


def voxel_to_view(
    view: View, z: np.ndarray | int, y: np.ndarray | int, x: np.ndarray | int, shape: Shape3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`view_to_voxel`: ``(slice, row, col)`` of voxels ``(z, y, x)`` in ``view``."""
    nz = shape[0]
    z, y, x = (np.asarray(a, dtype=np.int64) for a in (z, y, x))
    check_view(view)
    if view == "axial":
        return z, y, x
    if view == "coronal":
        return y, nz - 1 - z, x
    return x, nz - 1 - z, y


def view_plane(volume: np.ndarray, view: View, slice_index: int) -> np.ndarray:
    """The 2-D plane ``[row, col]`` of ``volume`` (``[z, y, x]``) shown by ``view`` (a numpy view)."""
    check_view(view)
    if view == "axial":
        return volume[slice_index]
    if view == "coronal":
        return volume[::-1, slice_index, :]
    return volume[::-1, :, slice_index]


def flat_indices(z: np.ndarray, y: np.ndarray, x: np.ndarray, shape: Shape3) -> np.ndarray:
    """C-order flat indices (int64) of voxels ``(z, y, x)`` in a volume of ``shape``."""
    _, ny, nx = shape
    return (np.asarray(z, np.int64) * ny + np.asarray(y, np.int64)) * nx + np.asarray(x, np.int64)


def disc_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the brush disc: every ``(dr, dc)`` with ``dr² + dc² ≤ radius²``.

    ``radius`` is in view pixels (voxels), so a radius of 0 paints one voxel and the disc is
    round in voxels, not in millimetres, when the spacing is anisotropic.
    """
    if radius < 0:
        raise ConfigurationError(f"brush radius must be >= 0 voxels, got {radius}")
    d = np.arange(-radius, radius + 1, dtype=np.int64)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    inside = dr * dr + dc * dc <= radius * radius
    return dr[inside], dc[inside]


def polyline_pixels(points: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(rows, cols)`` visited by the polyline through integer ``points`` ``[[row, col], ...]``.

    Each segment ``p0 → p1`` is sampled at ``n = max(|Δrow|, |Δcol|)`` steps, the ``i``-th
    sample at ``p0 + floor(Δ·i/n + 0.5)``: the same arithmetic as ``polylinePixels`` in
    ``viewer.js``, so the browser's preview and the kernel's edit cover the same pixels.
    """
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if len(pts) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows, cols = [pts[:1, 0]], [pts[:1, 1]]
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
        n = int(max(abs(r1 - r0), abs(c1 - c0)))
        if n == 0:
            continue
        i = np.arange(1, n + 1, dtype=np.int64)
        rows.append(r0 + np.floor((r1 - r0) * i / n + 0.5).astype(np.int64))
        cols.append(c0 + np.floor((c1 - c0) * i / n + 0.5).astype(np.int64))
    return np.concatenate(rows), np.concatenate(cols)


def stroke_pixels(
    points: Sequence[Sequence[int]], radius: int, rows: int, cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique in-bounds pixels ``(rows, cols)`` painted by a brush of ``radius`` along ``points``."""
    pr, pc = polyline_pixels(points)
    dr, dc = disc_offsets(radius)
    r = (pr[:, None] + dr[None, :]).ravel()
    c = (pc[:, None] + dc[None, :]).ravel()
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    flat = np.unique(r[inside] * cols + c[inside])
    return flat // cols, flat % cols


# --- edits and patches ------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One edit made in the viewer, in the coordinates of the view it was made in.

    Attributes
    ----------
    kind
        ``"stroke"`` (brush or eraser, a polyline of ``points``) or ``"fill"`` (one point).
    view
        The view it was made in: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    slice
        Slice index of that view (``z``, ``y`` or ``x``; see the module's table).
    points
        ``((row, col), ...)`` view pixels as displayed (row 0 at the top, col 0 at the left);
        may lie outside the image (those pixels are dropped).
    radius
        Brush radius in voxels (0 paints single voxels); 0 for a fill.
    segment
        The segment value painted, erased (only voxels of this segment) or filled with.
    erase
        True for the eraser.
    """

    kind: Literal["stroke", "fill"]
    view: View
    slice: int
    points: tuple[tuple[int, int], ...]
    radius: int = 0
    segment: int = 1
    erase: bool = False

    def __post_init__(self) -> None:
        check_view(self.view)
        if self.kind not in ("stroke", "fill"):
            raise ConfigurationError(f"edit kind must be 'stroke' or 'fill', got {self.kind!r}")
        if not self.points:
            raise ConfigurationError("an edit needs at least one point [row, col]")
        if not 0 <= self.segment <= 255:
            raise ConfigurationError(f"segment must be a label value 0-255, got {self.segment}")
        if self.radius < 0:
            raise ConfigurationError(f"brush radius must be >= 0 voxels, got {self.radius}")

    @classmethod
    def from_message(cls, content: Mapping[str, Any]) -> Edit:
        """Build an edit from the viewer's ``stroke`` or ``fill`` message (see ``viewer.js``)."""
        try:
            kind = content["type"]
            raw = content["points"] if kind == "stroke" else [content["point"]]
            points = tuple((int(r), int(c)) for r, c in raw)
            return cls(kind=kind, view=check_view(content["view"]), slice=int(content["slice"]),
                       points=points, radius=int(content.get("radius", 0)),
                       segment=int(content["segment"]), erase=bool(content.get("erase", False)))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"malformed edit message from the viewer ({exc!r}): {dict(content)!r:.200}") from exc


@dataclass(frozen=True)
class Patch:
    """New values for some voxels of the label volume.

    Attributes
    ----------
    indices
        Flat C-order indices into the ``[z, y, x]`` volume (int64, unique).
    values
        The new label values (uint8), one per index.
    previous
        The values before the patch (uint8), so that :meth:`inverse` undoes it.
    """

    indices: np.ndarray
    values: np.ndarray
    previous: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def changed(self) -> int:
        """Number of voxels whose value the patch changes."""
        return int(np.count_nonzero(self.values != self.previous))

    def inverse(self) -> Patch:
        """The patch that restores :attr:`previous`."""
        return Patch(self.indices, self.previous, self.values)


# --- the editor -------------------------------------------------------------------------------


class LabelEditor:
    """The label volume being corrected, with edits, undo and redo.

    Parameters
    ----------
    labels
        ``[z, y, x]`` label values (copied, stored as uint8); 0 is background.
    image
        Optional ``[z, y, x]`` image (HU) of the same shape, used to bound fills by
        ``fill_tolerance_hu``.
    fill_tolerance_hu
        When set (and ``image`` given), a fill only spreads to voxels whose HU differs from
        the clicked voxel's by at most this much.
    max_history
        Number of edits that can be undone; older ones are forgotten.
    """

    def __init__(self, labels: np.ndarray, *, image: np.ndarray | None = None,
                 fill_tolerance_hu: float | None = None, max_history: int = 50) -> None:
        if labels.ndim != 3:
            raise ConfigurationError(f"labels must be a [z, y, x] volume, got shape {labels.shape}")
        if image is not None and image.shape != labels.shape:
            raise ConfigurationError(f"image shape {image.shape} differs from labels shape {labels.shape}")
        if max_history < 1:
            raise ConfigurationError(f"max_history must be >= 1, got {max_history}")
        self._labels = np.array(labels, dtype=np.uint8, order="C", copy=True)
        self._image = image
        self.fill_tolerance_hu = fill_tolerance_hu
        self._undo: deque[Patch] = deque(maxlen=max_history)
        self._redo: list[Patch] = []

    @property
    def labels(self) -> np.ndarray:
        """The current labels ``[z, y, x]`` (a read-only view; copy it to keep it)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def shape(self) -> Shape3:
        """``(nz, ny, nx)``."""
        return cast(Shape3, self._labels.shape)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def label_counts(self) -> dict[int, int]:
        """Number of voxels of each non-zero label value present."""
        counts = np.bincount(self._labels.ravel(), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts) if v != 0}

    def apply(self, edit: Edit) -> Patch:
        """Apply ``edit`` and return the patch over every voxel it touched.

        The patch covers the whole footprint (the brush discs, or the filled region), with
        the values now held, so sending it to the viewer makes the browser's preview exactly
        match. Edits that change nothing are not recorded in the history.
        """
        n, rows, cols = view_shape(edit.view, self.shape)
        if not 0 <= edit.slice < n:
            raise ConfigurationError(f"{edit.view} slice {edit.slice} is outside 0..{n - 1}")
        if edit.kind == "stroke":
            r, c = stroke_pixels(edit.points, edit.radius, rows, cols)
        else:
            r, c = self._fill_region(edit, rows, cols)
        idx = flat_indices(*view_to_voxel(edit.view, edit.slice, r, c, self.shape), self.shape)
        flat = self._labels.reshape(-1)
        previous = flat[idx].copy()
        if edit.kind == "stroke" and edit.erase:
            values = np.where(previous == edit.segment, np.uint8(0), previous)
        else:
            values = np.full(idx.shape, edit.segment, dtype=np.uint8)
        patch = Patch(idx, values, previous)
        flat[idx] = values
        if patch.changed:
            self._undo.append(patch)
            self._redo.clear()
        log.debug("%s on %s slice %d: %d voxels, %d changed", edit.kind, edit.view, edit.slice,
                  len(patch), patch.changed)
        return patch

    def undo(self) -> Patch | None:
        """Undo the newest edit; return the patch that did it, or None when there is none."""
        if not self._undo:
            return None
        patch = self._undo.pop()
        self._redo.append(patch)
        inverse = patch.inverse()
        self._labels.reshape(-1)[inverse.indices] = inverse.values
        return inverse

    def redo(self) -> Patch | None:
        """Redo the newest undone edit; return its patch, or None when there is none."""
        if not self._redo:
            return None
        patch = self._redo.pop()
        self._undo.append(patch)
        self._labels.reshape(-1)[patch.indices] = patch.values
        return patch

    def _fill_region(self, edit: Edit, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of the 4-connected region around the clicked pixel (empty when outside)."""
        r0, c0 = edit.points[0]
        if not (0 <= r0 < rows and 0 <= c0 < cols):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        plane = view_plane(self._labels, edit.view, edit.slice)
        mask = plane == plane[r0, c0]
        if self._image is not None and self.fill_tolerance_hu is not None:
            hu = view_plane(self._image, edit.view, edit.slice).astype(np.float64)
            mask &= np.abs(hu - hu[r0, c0]) <= self.fill_tolerance_hu
        from scipy import ndimage  # ~1 s to import: only when someone fills

        components, _ = ndimage.label(mask)
        r, c = np.nonzero(components == components[r0, c0])
        return r.astype(np.int64), c.astype(np.int64)
