"""SliceViewer's kernel side without a browser: validation and the messages it sends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.review import LabelEditor, SliceViewer
from medimg_kernel.review.viewer import WINDOW_PRESETS, link_editor

SHAPE = (4, 5, 6)


@pytest.fixture
def viewer() -> tuple[SliceViewer, list[tuple[dict[str, Any], list[bytes]]]]:
    v = SliceViewer()
    sent: list[tuple[dict[str, Any], list[bytes]]] = []
    v.send = lambda content, buffers=None: sent.append((content, [bytes(b) for b in buffers or []]))  # type: ignore[method-assign]
    image = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    v.show(image, (2.5, 0.7, 0.7), np.zeros(SHAPE, np.uint8), [{"value": 1, "label": "liver"}], window_preset="liver")
    return v, sent


def test_show_sets_state_and_preview(viewer) -> None:
    v, _ = viewer
    assert v.shape == SHAPE and v.cursor == [2, 2, 3] and (v.window, v.level) == WINDOW_PRESETS["liver"]
    assert v.segments[0]["visible"] and v.segments[0]["color"].startswith("#")
    planes = 5 * 6 + 4 * 6 + 4 * 5
    assert len(v._preview) == planes * 3  # int16 image planes then uint8 label planes


def test_volume_request_and_patch_messages(viewer) -> None:
    v, sent = viewer
    v._on_message(v, {"type": "request_volume", "load_id": v._load_id - 1}, [])
    assert sent == []  # a stale load's request is ignored
    v.apply_patch(np.array([0, 7]), np.array([1, 2], np.uint8))
    v._on_message(v, {"type": "request_volume", "load_id": v._load_id}, [])
    (patch, patch_buffers), (volume, buffers) = sent
    assert patch["type"] == "patch" and np.frombuffer(patch_buffers[0], "<u4").tolist() == [0, 7]
    assert volume["type"] == "volume" and len(buffers[0]) == 2 * np.prod(SHAPE)
    assert np.frombuffer(buffers[1], np.uint8)[[0, 7]].tolist() == [1, 2]  # the current labels


def test_edits_reach_the_editor_and_come_back_as_patches(viewer) -> None:
    v, sent = viewer
    editor = LabelEditor(np.zeros(SHAPE, np.uint8))
    link_editor(v, editor)
    v._on_message(v, {"type": "stroke", "view": "axial", "slice": 1, "points": [[2, 2]], "radius": 1,
                      "segment": 1, "erase": False}, [])
    assert editor.label_counts() == {1: 5} and sent[-1][0] == {"type": "patch", "count": 5}
    np.testing.assert_array_equal(v.labels, editor.labels)


def test_invalid_input_is_refused(viewer) -> None:
    v, _ = viewer
    with pytest.raises(ConfigurationError, match="labels shape"):
        v.show(np.zeros(SHAPE), (1, 1, 1), np.zeros((1, 1, 1), np.uint8))
    with pytest.raises(ConfigurationError, match="spacing"):
        v.show(np.zeros(SHAPE), (1, 0, 1))
    with pytest.raises(ConfigurationError, match="indices"):
        v.apply_patch(np.array([10_000]), np.array([1], np.uint8))
    with pytest.raises(ConfigurationError, match="preset"):
        v.set_window_preset("brain")
