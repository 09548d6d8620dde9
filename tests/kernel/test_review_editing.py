"""LabelEditor, Edit, Patch and the view geometry shared with viewer.js (no browser)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.review import LabelEditor
from medimg_kernel.review.editing import (
    VIEWS,
    Edit,
    disc_offsets,
    polyline_pixels,
    view_plane,
    view_shape,
    view_to_voxel,
    voxel_to_view,
)

SHAPE = (5, 6, 7)  # (nz, ny, nx): all different, so a swapped axis shows


def stroke(view: str = "axial", slice_: int = 2, points=((3, 3),), radius: int = 1,
           segment: int = 1, erase: bool = False) -> Edit:
    return Edit(kind="stroke", view=view, slice=slice_, points=tuple(points), radius=radius,
                segment=segment, erase=erase)


# --- geometry -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("view", "expected"), [
    # view pixel (slice=1, row=0, col=2) -> voxel (z, y, x)
    ("axial", (1, 0, 2)),      # row = y, col = x
    ("coronal", (4, 1, 2)),    # row 0 = the most superior z (nz-1), col = x, slice = y
    ("sagittal", (4, 2, 1)),   # row 0 = the most superior z, col = y (anterior left), slice = x
])
def test_view_to_voxel_table(view: str, expected: tuple[int, int, int]) -> None:
    z, y, x = view_to_voxel(view, 1, 0, 2, SHAPE)
    assert (int(z), int(y), int(x)) == expected


@pytest.mark.parametrize("view", VIEWS)
def test_view_mapping_round_trips_and_matches_view_plane(view: str) -> None:
    volume = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    n, rows, cols = view_shape(view, SHAPE)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    for s in range(n):
        z, y, x = view_to_voxel(view, s, r, c, SHAPE)
        np.testing.assert_array_equal(volume[z, y, x], view_plane(volume, view, s))
        s2, r2, c2 = voxel_to_view(view, z, y, x, SHAPE)
        assert (s2 == s).all() and (r2 == r).all() and (c2 == c).all()


def test_superior_is_up_in_coronal_and_sagittal() -> None:
    volume = np.zeros(SHAPE)
    volume[-1] = 1  # the most superior slice
    assert view_plane(volume, "coronal", 0)[0].all() and view_plane(volume, "sagittal", 0)[0].all()
    assert not view_plane(volume, "coronal", 0)[-1].any()


def test_polyline_and_disc() -> None:
    r, c = polyline_pixels([(0, 0), (2, 5)])
    assert list(zip(r.tolist(), c.tolist())) == [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)]
    dr, dc = disc_offsets(1)
    assert sorted(zip(dr.tolist(), dc.tolist())) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
    assert len(disc_offsets(0)[0]) == 1


def test_javascript_geometry_computes_what_python_computes(tmp_path: Path) -> None:
    """viewer.js (run by Node, as the browser runs it) and medimg_kernel.review.editing agree on every voxel."""

    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: scripts/bootstrap.sh installs nodejs (configurable-http-proxy needs it)")
    module = tmp_path / "viewer.mjs"
    module.write_text((Path(__file__).parents[2] / "medimg_kernel" / "review" / "viewer.js").read_text())
    runner = tmp_path / "run.mjs"
    runner.write_text(
        "import { readFileSync } from 'node:fs';\n"
        "globalThis.window = {};\n"
        "const m = await import(process.argv[2]);\n"
        "const { shape, views, lines } = JSON.parse(readFileSync(0, 'utf8'));\n"
        "const out = { shapes: {}, toVoxel: {}, toView: {}, discs: [], lines: [] };\n"
        "for (const v of views) {\n"
        "  const [n, rows, cols] = m.viewShape(v, shape);\n"
        "  out.shapes[v] = [n, rows, cols]; out.toVoxel[v] = []; out.toView[v] = [];\n"
        "  for (let s = 0; s < n; s++) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {\n"
        "    const zyx = m.viewToVoxel(v, s, r, c, shape);\n"
        "    out.toVoxel[v].push(zyx); out.toView[v].push(m.voxelToView(v, ...zyx, shape));\n"
        "  }\n"
        "}\n"
        "for (let radius = 0; radius < 4; radius++) out.discs.push(m.discOffsets(radius));\n"
        "for (const line of lines) out.lines.push(m.polylinePixels(line));\n"
        "console.log(JSON.stringify(out));\n")
    lines = [[[0, 0], [2, 5]], [[3, 1], [0, 7], [5, 5]], [[4, 4]], [[1, 6], [6, 1]]]
    done = subprocess.run([node, str(runner), module.as_uri()], input=json.dumps(
        {"shape": list(SHAPE), "views": list(VIEWS), "lines": lines}), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    js = json.loads(done.stdout)
    for view in VIEWS:
        n, rows, cols = view_shape(view, SHAPE)
        assert tuple(js["shapes"][view]) == (n, rows, cols)
        s, r, c = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij"))
        z, y, x = view_to_voxel(view, s, r, c, SHAPE)
        assert js["toVoxel"][view] == np.stack([z, y, x], axis=1).tolist(), view
        assert js["toView"][view] == np.stack([s, r, c], axis=1).tolist(), view
    for radius, offsets in enumerate(js["discs"]):
        dr, dc = disc_offsets(radius)
        assert sorted(map(tuple, offsets)) == sorted(zip(dr.tolist(), dc.tolist())), radius
    for line, pixels in zip(lines, js["lines"]):
        r, c = polyline_pixels(line)
        assert [tuple(p) for p in pixels] == list(zip(r.tolist(), c.tolist())), line


# --- editing ------------------------------------------------------------------------------------

def test_paint_stroke_covers_discs_along_polyline() -> None:
    editor = LabelEditor(np.zeros(SHAPE, np.uint8))
    patch = editor.apply(stroke(points=((1, 1), (1, 4)), radius=1, segment=2))
    painted = editor.labels[2]
    assert painted[1, 1:5].tolist() == [2, 2, 2, 2] and painted[0, 1] == 2 and painted[2, 4] == 2
    assert painted[0, 0] == 0 and editor.labels[[0, 1, 3, 4]].sum() == 0
    assert len(patch) == patch.changed == int((editor.labels == 2).sum())
    assert (patch.values == 2).all() and (patch.previous == 0).all()


def test_stroke_in_coronal_view_paints_the_right_voxels() -> None:
    editor = LabelEditor(np.zeros(SHAPE, np.uint8))
    editor.apply(stroke(view="coronal", slice_=3, points=((0, 6),), radius=0))
    assert np.argwhere(editor.labels).tolist() == [[4, 3, 6]]


def test_erase_removes_only_the_active_segment() -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, 2:5, 2:5] = 1
    labels[2, 3, 3] = 2
    editor = LabelEditor(labels)
    patch = editor.apply(stroke(points=((3, 3),), radius=2, segment=1, erase=True))
    assert editor.labels[2, 3, 3] == 2 and (editor.labels == 1).sum() == 0
    assert patch.changed == 8


def test_fill_spreads_over_the_connected_same_label_region() -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, :, 3] = 1  # a wall splitting slice 1 into left and right
    editor = LabelEditor(labels)
    editor.apply(Edit(kind="fill", view="axial", slice=1, points=((0, 0),), segment=2))
    assert (editor.labels[1, :, :3] == 2).all() and (editor.labels[1, :, 4:] == 0).all()
    assert (editor.labels[0] == 0).all() and (editor.labels[1, :, 3] == 1).all()


def test_fill_bounded_by_hu_tolerance() -> None:
    image = np.zeros(SHAPE, np.int16)
    image[1, :, 4:] = 300
    editor = LabelEditor(np.zeros(SHAPE, np.uint8), image=image, fill_tolerance_hu=50)
    editor.apply(Edit(kind="fill", view="axial", slice=1, points=((0, 0),), segment=3))
    assert (editor.labels[1, :, :4] == 3).all() and (editor.labels[1, :, 4:] == 0).all()


def test_undo_redo_round_trip_restores_exactly() -> None:
    rng = np.random.default_rng(0)
    start = rng.integers(0, 3, SHAPE).astype(np.uint8)
    editor = LabelEditor(start)
    edits = [stroke(points=((0, 0), (5, 6)), radius=1, segment=1),
             stroke(view="sagittal", slice_=3, points=((1, 1), (3, 4)), radius=2, segment=2),
             stroke(points=((2, 2),), radius=3, segment=1, erase=True)]
    states = [editor.labels.copy()]
    for edit in edits:
        editor.apply(edit)
        states.append(editor.labels.copy())
    for expected in reversed(states[:-1]):
        patch = editor.undo()
        assert patch is not None
        np.testing.assert_array_equal(editor.labels, expected)
    assert editor.undo() is None
    for expected in states[1:]:
        editor.redo()
        np.testing.assert_array_equal(editor.labels, expected)
    assert editor.redo() is None


def test_undo_patch_applied_to_a_mirror_reproduces_state() -> None:
    editor = LabelEditor(np.zeros(SHAPE, np.uint8))
    mirror = editor.labels.copy().reshape(-1)
    for p in (editor.apply(stroke(radius=2)), editor.undo()):
        mirror[p.indices] = p.values
    np.testing.assert_array_equal(mirror.reshape(SHAPE), editor.labels)


def test_history_is_bounded_and_new_edit_clears_redo() -> None:
    editor = LabelEditor(np.zeros(SHAPE, np.uint8), max_history=2)
    for segment in (1, 2, 3):
        editor.apply(stroke(radius=0, segment=segment))
    assert editor.undo() is not None and editor.undo() is not None and editor.undo() is None
    assert editor.labels[2, 3, 3] == 1  # the first edit could no longer be undone
    editor.apply(stroke(radius=0, segment=4))
    assert not editor.can_redo


def test_noop_edit_is_not_recorded() -> None:
    editor = LabelEditor(np.zeros(SHAPE, np.uint8))
    patch = editor.apply(stroke(erase=True))
    assert patch.changed == 0 and not editor.can_undo


def test_edit_from_message_and_validation() -> None:
    edit = Edit.from_message({"type": "stroke", "view": "coronal", "slice": 2, "points": [[1, 2], [3, 4]],
                              "radius": 2, "segment": 1, "erase": False})
    assert edit.points == ((1, 2), (3, 4)) and edit.kind == "stroke"
    fill = Edit.from_message({"type": "fill", "view": "axial", "slice": 0, "point": [1, 1], "segment": 2})
    assert fill.kind == "fill" and fill.points == ((1, 1),)
    with pytest.raises(ConfigurationError, match="view"):
        Edit.from_message({"type": "stroke", "view": "oblique", "slice": 0, "points": [[0, 0]], "segment": 1})
    with pytest.raises(ConfigurationError, match="malformed"):
        Edit.from_message({"type": "stroke", "view": "axial"})
    with pytest.raises(ConfigurationError, match="outside"):
        LabelEditor(np.zeros(SHAPE, np.uint8)).apply(stroke(slice_=9))
