"""Planar polygons ↔ voxel masks on one slice: the geometry under RT Structure Sets.

Both directions work in a slice's continuous *index* coordinates ``(x, y)``: ``x`` the column
index ``i``, ``y`` the row index ``j``, so voxel ``[j, i]`` has its centre at ``(i, j)`` and covers
``[i - 0.5, i + 0.5] × [j - 0.5, j + 0.5]``. :mod:`medimg_kernel.rtstruct` maps LPS millimetres to
these coordinates with the volume's geometry.

* :func:`fill_polygons` (polygons → mask): a voxel is inside when its centre is inside the
  polygons by the **even-odd rule** (a contour inside another is a hole, one inside that an island
  again) or lies on an edge of one of them (within ``on_edge_atol`` voxels). So a region's own
  boundary belongs to it, and a rectangle drawn through voxel centres, as many planning systems
  draw, keeps its border voxels on all four sides.
* :func:`trace_boundaries` (mask → polygons): the exact outline of the voxels, edges on voxel
  borders (half-integer coordinates), one closed polygon per boundary loop: outer boundaries and
  holes alike, collinear points dropped. Where two voxels touch only at a corner, each loop cuts
  that corner by a quarter voxel, so the loops are simple and never touch; no voxel centre lies on
  or near an edge, and :func:`fill_polygons` of the traced polygons gives the mask back exactly.

Written here rather than taken from a library: OpenCV's ``findContours`` (what rt-utils uses) and
scikit-image's ``find_contours`` trace voxel *centres* or an iso-line between them, so filling the
polygons back with any centre-in-polygon rule loses or gains border voxels (around holes above all).
Tracing voxel borders makes write → read exact by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fill_polygons", "trace_boundaries", "ON_EDGE_ATOL"]

#: Distance (in voxels) within which a voxel centre counts as lying on a polygon edge.
ON_EDGE_ATOL = 1e-3
#: How far (in voxels) a traced loop cuts a corner where two voxels touch only diagonally.
CORNER_CUT = 0.25


def fill_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int], *,
                  on_edge_atol: float = ON_EDGE_ATOL) -> np.ndarray:
    """Rasterise closed polygons on one slice by the even-odd rule, edges included.

    Parameters
    ----------
    polygons
        Each an ``(n, 2)`` array of ``(x, y)`` index coordinates (column, row); closed implicitly
        (the last point joins the first). Parts outside the slice are clipped.
    shape
        ``(ny, nx)`` of the slice.
    on_edge_atol
        A voxel centre closer than this (voxels, along a row or column) to an edge is inside.

    Returns
    -------
    numpy.ndarray
        Boolean ``(ny, nx)``.
    """
    ny, nx = shape
    toggles = np.zeros((ny, nx + 1), np.int32)
    on_edge = np.zeros((ny, nx), bool)
    closed = [np.asarray(p, float).reshape(-1, 2) for p in polygons]
    closed = [p for p in closed if len(p) >= 2]
    if closed:
        start = np.concatenate(closed)
        end = np.concatenate([np.roll(p, -1, axis=0) for p in closed])
        _add_crossings(toggles, start, end, nx)
        _mark_edges(on_edge, start, end, on_edge_atol, major=1)  # steep edges: one point per row
        _mark_edges(on_edge, start, end, on_edge_atol, major=0)  # flat edges: one point per column
    inside = (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)
    return inside | on_edge


def _integer_steps(low: np.ndarray, high: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """For each interval ``[low, high)`` of integers (clipped to ``[0, limit)``): the interval's
    index and the integer, one pair per integer."""
    low = np.clip(low, 0, limit)
    high = np.clip(high, 0, limit)
    counts = np.maximum(high - low, 0)
    which = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    values = low[which] + np.arange(int(counts.sum())) - first[which]
    return which, values


def _add_crossings(toggles: np.ndarray, start: np.ndarray, end: np.ndarray, nx: int) -> None:
    """Count each edge's crossing of each row ``y = j`` (half-open in y, so a vertex on a row
    counts once) at the first column right of the crossing; the running sum's parity is even-odd."""
    y0, y1 = start[:, 1], end[:, 1]
    low = np.ceil(np.minimum(y0, y1)).astype(np.int64)
    high = np.ceil(np.maximum(y0, y1)).astype(np.int64)
    edge, row = _integer_steps(low, high, toggles.shape[0])
    if not len(edge):
        return
    t = (row - y0[edge]) / (y1[edge] - y0[edge])
    x = start[edge, 0] + t * (end[edge, 0] - start[edge, 0])
    column = np.clip(np.floor(x).astype(np.int64) + 1, 0, nx)  # voxels i > x are right of the crossing
    np.add.at(toggles, (row, column), 1)


def _mark_edges(on_edge: np.ndarray, start: np.ndarray, end: np.ndarray, atol: float, *, major: int) -> None:
    """Mark voxel centres on edges, stepping along axis ``major`` (0: x, 1: y) for the edges that
    run more along it than across (each edge is handled by one of the two calls)."""
    minor = 1 - major
    delta = end - start
    steep = np.abs(delta[:, major]) >= np.abs(delta[:, minor])
    if major == 0:
        steep &= np.abs(delta[:, 0]) > np.abs(delta[:, 1])  # ties were taken by the rows
    steep &= np.abs(delta[:, major]) > 0
    if not np.any(steep):
        return
    s, d = start[steep], delta[steep]
    low = np.ceil(np.minimum(s[:, major], s[:, major] + d[:, major]) - atol).astype(np.int64)
    high = np.floor(np.maximum(s[:, major], s[:, major] + d[:, major]) + atol).astype(np.int64) + 1
    edge, along = _integer_steps(low, high, on_edge.shape[1 - major])
    if not len(edge):
        return
    across = s[edge, minor] + (along - s[edge, major]) / d[edge, major] * d[edge, minor]
    nearest = np.rint(across)
    hit = (np.abs(across - nearest) <= atol) & (nearest >= 0) & (nearest < on_edge.shape[major])
    rows, columns = (along[hit], nearest[hit].astype(np.int64))[::1 if major == 1 else -1]
    on_edge[rows, columns] = True


# --- mask → polygons ---------------------------------------------------------------------------


def trace_boundaries(mask: np.ndarray) -> list[np.ndarray]:
    """The closed boundary loops of a 2-D mask along voxel borders (see the module).

    Parameters
    ----------
    mask
        Boolean ``(ny, nx)``.

    Returns
    -------
    list of numpy.ndarray
        Each ``(n, 2)`` ``(x, y)`` index coordinates of one loop's corners, not repeating the
        first point; outer boundaries and holes (the even-odd rule tells them apart), in the
        order of their first voxel in a row-major scan.
    """
    start, end, direction = _boundary_edges(np.asarray(mask, bool))
    if not len(start):
        return []
    successor, saddle = _successors(start, end, direction, mask.shape[1] + 1)
    loops = []
    seen = np.zeros(len(start), bool)
    for first in range(len(start)):
        if seen[first]:
            continue
        chain = [first]
        seen[first] = True
        edge = successor[first]
        while edge != first:
            chain.append(edge)
            seen[edge] = True
            edge = successor[edge]
        loops.append(_polygon(np.asarray(chain), start, direction, saddle))
    return loops


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed voxel sides between inside and outside, every inside voxel walked the same way
    round (top, right, bottom, left): corners as ``(cx, cy)`` integers (corner ``(cx, cy)`` is at
    index coordinates ``(cx - 0.5, cy - 0.5)``), and each side's unit direction."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    sides = (  # (neighbour outside, start corner offset, direction)
        (~padded[:-2, 1:-1], (0, 0), (1, 0)),   # top: left → right
        (~padded[1:-1, 2:], (1, 0), (0, 1)),    # right: top → bottom
        (~padded[2:, 1:-1], (1, 1), (-1, 0)),   # bottom: right → left
        (~padded[1:-1, :-2], (0, 1), (0, -1)),  # left: bottom → top
    )
    starts, directions = [], []
    for exposed, offset, step in sides:
        rows, columns = np.nonzero(inner & exposed)
        starts.append(np.stack([columns + offset[0], rows + offset[1]], axis=1))
        directions.append(np.broadcast_to(np.array(step), (len(rows), 2)))
    start = np.concatenate(starts)
    direction = np.concatenate(directions)
    order = np.lexsort((start[:, 0], start[:, 1]))  # row-major, so loops come out in scan order
    start, direction = start[order], direction[order]
    return start, start + direction, direction


def _successors(start: np.ndarray, end: np.ndarray, direction: np.ndarray,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """The edge that follows each edge; at a corner with two ways on (two voxels touching only
    diagonally) the one turning so as to keep to the same voxel (cross(in, out) > 0): loops
    separate diagonal neighbours. Also whether each edge starts at such a corner."""
    start_id = start[:, 1] * width + start[:, 0]
    end_id = end[:, 1] * width + end[:, 0]
    order = np.argsort(start_id, kind="stable")
    sorted_ids = start_id[order]
    first = np.searchsorted(sorted_ids, end_id, side="left")
    count = np.searchsorted(sorted_ids, end_id, side="right") - first
    candidate = order[first]
    two = count == 2
    other = order[np.minimum(first + 1, len(order) - 1)]
    cross = direction[:, 0] * direction[candidate, 1] - direction[:, 1] * direction[candidate, 0]
    successor = np.where(two & (cross <= 0), other, candidate)
    saddle = np.zeros(len(start), bool)
    saddle[successor[two]] = True
    return successor, saddle


def _polygon(chain: np.ndarray, start: np.ndarray, direction: np.ndarray, saddle: np.ndarray) -> np.ndarray:
    """A loop's corners in index coordinates: a point where the direction turns, two points cutting
    the corner where the loop passes a diagonal contact."""
    incoming = direction[np.roll(chain, 1)]
    outgoing = direction[chain]
    turns = np.any(incoming != outgoing, axis=1)
    points = []
    for edge, came, goes, turn in zip(chain, incoming, outgoing, turns, strict=True):
        if not turn:
            continue
        corner = start[edge].astype(float) - 0.5
        if saddle[edge]:
            points += [corner - CORNER_CUT * came, corner + CORNER_CUT * goes]
        else:
            points.append(corner)
    return np.asarray(points)
