"""Polygons ↔ voxel masks on one slice (medimg_kernel.rtstruct.contours): traced voxel borders fill back exactly,
loops are simple and disjoint, and the even-odd fill keeps a polygon's own border voxels."""

from __future__ import annotations

import numpy as np
import pytest

from medimg_kernel.rtstruct.contours import fill_polygons, trace_boundaries


@pytest.mark.parametrize("seed", range(5))
def test_traced_boundaries_fill_back_exactly(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 25, 2))
        mask = rng.random(shape) < rng.random()
        np.testing.assert_array_equal(fill_polygons(trace_boundaries(mask), shape), mask)


def test_loops_are_simple_disjoint_and_on_voxel_borders():
    checkerboard = (np.add.outer(np.arange(7), np.arange(6)) % 2).astype(bool)
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False
    ring[4, 4] = True
    for mask in (checkerboard, ring):
        loops = trace_boundaries(mask)
        points = [tuple(p) for loop in loops for p in np.round(loop, 6)]
        assert len(points) == len(set(points)), "loops share or repeat a point"
        for loop in loops:
            on_border = np.isclose(loop % 1, 0.5) | np.isclose(loop % 1, 0.25) | np.isclose(loop % 1, 0.75)
            assert on_border.all()
    assert len(trace_boundaries(checkerboard)) == checkerboard.sum()  # diagonal neighbours: separate loops
    assert [len(loop) for loop in trace_boundaries(ring)] == [4, 4, 4]  # outer, hole, island


def test_even_odd_fill_includes_the_border_and_clips_to_the_slice():
    square = np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]])  # (x, y) through voxel centres
    beyond = np.array([[-5.0, -5.0], [2.4, -5.0], [2.4, 0.6], [-5.0, 0.6]])  # mostly outside the slice
    filled = fill_polygons([square, beyond], (5, 6))
    expected = np.zeros((5, 6), bool)
    expected[1:4, 1:5] = True
    expected[0, 0:3] = True
    np.testing.assert_array_equal(filled, expected)
    assert not fill_polygons([], (3, 3)).any()
