"""The clinician's slice viewer: an offline anywidget that renders in the browser.

The whole volume goes to the browser once, as binary, and ``viewer.js`` draws axial, coronal
and sagittal slices on 2-D canvases there, so scrolling, window/level, zoom and pan never
touch the kernel. Edits are previewed in the browser and sent to the kernel as one message per
stroke or fill; the kernel's model (e.g. :class:`~medimg_kernel.review.editing.LabelEditor`)
applies them and sends the authoritative voxels back with :meth:`SliceViewer.apply_patch`.

The widget does no I/O: give it arrays. Its JavaScript and CSS are files of this package (no
CDN), so it works in an offline Voila.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.review.editing import Edit, LabelEditor, Patch

log = logging.getLogger(__name__)

#: Window/level presets in HU, name → ``(window width, window level)``.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft tissue": (400.0, 40.0),
    "liver": (150.0, 90.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
}

_DEFAULT_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0")
EditCallback = Callable[[Edit], Any]


class SliceViewer(anywidget.AnyWidget):
    """Axial, coronal and sagittal slices of one CT volume with its segmentation overlaid.

    Load a case with :meth:`show`. Coordinates follow :mod:`medimg_kernel.review.editing`:
    volumes are ``[z, y, x]`` with ``z`` toward superior, ``y`` toward posterior and ``x``
    toward patient left (LPS); the axial view is radiological (patient right on the left),
    coronal and sagittal views have superior at the top and sagittal has anterior on the left.

    In the browser: click to move the crosshair (the other views follow), wheel or Up/Down
    (PageUp/PageDown: 10) to change slice on the view under the mouse / focused, ctrl+wheel or
    +/- to zoom, middle- or shift-drag to pan, right-drag for window (horizontal) and level
    (vertical), ``0`` to reset zoom and pan.
    """

    _esm = Path(__file__).with_name("viewer.js")
    _css = Path(__file__).with_name("viewer.css")

    # The three planes through the cursor at load time (image int16 then labels uint8, each
    # axial [ny, nx], coronal [nz, nx], sagittal [nz, ny]), so the first image needs no volume.
    _preview = t.Bytes(b"").tag(sync=True)
    _load_id = t.Int(0).tag(sync=True)
    shape = t.Tuple(t.Int(), t.Int(), t.Int(), default_value=(0, 0, 0),
                    help="(nz, ny, nx) of the volume shown (read-only; set by show()).").tag(sync=True)
    spacing = t.Tuple(t.Float(), t.Float(), t.Float(), default_value=(1.0, 1.0, 1.0),
                      help="(dz, dy, dx) voxel size in mm; sets the aspect of each view.").tag(sync=True)
    segments = t.List(t.Dict(), help="[{value, label, color '#rrggbb', visible, opacity 0-1 (default 1)}, ...] "
                                     "overlaid segments.").tag(sync=True)
    opacity = t.Float(0.5, min=0.0, max=1.0, help="Opacity of the segmentation overlay, 0-1 (times each "
                                                    "segment's own).").tag(sync=True)
    overlay_mode = t.Enum(("fill", "outline"), "fill",
                          help="Segments filled (blended at their opacity) or drawn as their in-plane outline.").tag(sync=True)
    window = t.Float(400.0, help="Window width in HU.").tag(sync=True)
    level = t.Float(40.0, help="Window level (centre) in HU.").tag(sync=True)
    window_presets = t.Dict({k: list(v) for k, v in WINDOW_PRESETS.items()}).tag(sync=True)
    tool = t.Enum(("none", "brush", "eraser", "fill"), "none", help="Left-button tool.").tag(sync=True)
    brush_radius = t.Int(3, min=0, max=50, help="Brush/eraser radius in voxels (0: one voxel).").tag(sync=True)
    active_segment = t.Int(1, min=1, max=255, help="Segment value painted, erased or filled.").tag(sync=True)
    cursor = t.List(t.Int(), default_value=[0, 0, 0],
                    help="Crosshair voxel [z, y, x]; set it to jump there. The browser reports it back.").tag(sync=True)
    view_height = t.Int(420, min=120, help="Height of the views in CSS pixels.").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._image_np: np.ndarray | None = None
        self._labels_np: np.ndarray | None = None
        self._edit_callbacks: list[EditCallback] = []
        self.on_msg(self._on_message)

    # --- loading ------------------------------------------------------------------------------

    def show(self, image: np.ndarray, spacing: Sequence[float], labels: np.ndarray | None = None,
             segments: Sequence[Mapping[str, Any]] | None = None, *,
             window_preset: str | None = "soft tissue") -> None:
        """Load one case: one binary transfer of the image and labels to each browser view.

        The widget's state carries only the three planes through the centre, which the browser
        draws at once; each view then asks for the whole volume, which goes as one binary
        message (image and current labels) while the planes are already on screen.

        Parameters
        ----------
        image
            ``[z, y, x]`` intensities in HU; cast to int16 (values outside its range clip).
        spacing
            ``(dz, dy, dx)`` voxel size in millimetres.
        labels
            ``[z, y, x]`` uint8 label values (0 background), same shape; default all zero.
        segments
            ``[{"value": 1, "label": "liver", "color": "#rrggbb", "visible": True}, ...]``;
            ``color`` and ``visible`` are optional. Default: one entry per label value present.
        window_preset
            A key of :data:`WINDOW_PRESETS` to start with, or None to keep the current window.
        """
        if image.ndim != 3 or min(image.shape) < 1:
            raise ConfigurationError(f"image must be a non-empty [z, y, x] volume, got shape {image.shape}")
        if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
            raise ConfigurationError(f"spacing must be three positive mm values (dz, dy, dx), got {spacing!r}")
        lab = self._checked_labels(labels, image.shape)
        img = np.clip(np.rint(image) if image.dtype.kind == "f" else image, -32768, 32767)
        img = np.ascontiguousarray(img, dtype="<i2")
        segs = _segment_list(segments, lab)
        self._image_np, self._labels_np = img, lab
        cz, cy, cx = (n // 2 for n in img.shape)
        with self.hold_sync():
            self._preview = b"".join(p.tobytes() for a in (img, lab) for p in (a[cz], a[:, cy, :], a[:, :, cx]))
            self.shape = tuple(int(n) for n in img.shape)
            self.spacing = tuple(float(s) for s in spacing)
            self.segments = segs
            self.cursor = [cz, cy, cx]
            if window_preset is not None:
                self.set_window_preset(window_preset)
            self._load_id += 1
        log.info("viewer loaded a %s volume (%.1f MB)", "x".join(map(str, img.shape)), img.nbytes / 1e6)

    def set_window_preset(self, name: str) -> None:
        """Set window and level from :data:`WINDOW_PRESETS` (``"soft tissue"``, ``"liver"``, ...)."""
        try:
            self.window, self.level = WINDOW_PRESETS[name]
        except KeyError:
            raise ConfigurationError(f"unknown window preset {name!r}; choose one of {', '.join(WINDOW_PRESETS)}") from None

    def set_labels(self, labels: np.ndarray) -> None:
        """Replace all labels (one binary transfer of the whole volume)."""
        lab = self._checked_labels(labels, tuple(self.shape))
        self._labels_np = lab
        self.send({"type": "labels", "load_id": self._load_id}, buffers=[lab.tobytes()])

    def apply_patch(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set some voxels' labels in the browser (e.g. a :class:`Patch` from the model).

        Parameters
        ----------
        indices
            1-D flat C-order indices into the ``[z, y, x]`` volume.
        values
            uint8 label values, one per index.
        """
        if self._labels_np is None:
            raise ConfigurationError("no case loaded: call show() before apply_patch()")
        idx = np.asarray(indices).ravel()
        val = np.asarray(values).ravel()
        if idx.shape != val.shape:
            raise ConfigurationError(f"apply_patch: {idx.size} indices but {val.size} values")
        if idx.size and (idx.min() < 0 or idx.max() >= self._labels_np.size):
            raise ConfigurationError(f"apply_patch: indices must lie in 0..{self._labels_np.size - 1}")
        if not idx.size:
            return
        self._labels_np.reshape(-1)[idx] = val
        self.send({"type": "patch", "count": int(idx.size)},
                  buffers=[idx.astype("<u4").tobytes(), val.astype(np.uint8).tobytes()])

    @property
    def labels(self) -> np.ndarray | None:
        """The labels the browser shows (after patches), read-only, or None before :meth:`show`."""
        if self._labels_np is None:
            return None
        view = self._labels_np.view()
        view.flags.writeable = False
        return view

    # --- edits from the browser ---------------------------------------------------------------

    def on_edit(self, callback: EditCallback, remove: bool = False) -> None:
        """Call ``callback(edit)`` for every stroke or fill made in the browser (or stop with ``remove``)."""
        if remove:
            self._edit_callbacks.remove(callback)
        else:
            self._edit_callbacks.append(callback)

    def _on_message(self, _widget: Any, content: Mapping[str, Any], _buffers: list[Any]) -> None:
        kind = content.get("type")
        if kind == "request_volume":
            # A view drew the preview planes of load `load_id` and wants the volume.
            if content.get("load_id") == self._load_id and self._image_np is not None and self._labels_np is not None:
                self.send({"type": "volume", "load_id": self._load_id},
                          buffers=[memoryview(self._image_np).cast("B"), self._labels_np.tobytes()])
            return
        if kind not in ("stroke", "fill"):
            log.warning("viewer: ignoring unknown message type %r", kind)
            return
        edit = Edit.from_message(content)
        for callback in list(self._edit_callbacks):
            try:
                callback(edit)
            except Exception:  # a handler's bug must not break the widget's comm
                log.exception("viewer: edit handler %r failed", callback)

    @staticmethod
    def _checked_labels(labels: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        if labels is None:
            return np.zeros(shape, np.uint8)
        if labels.shape != tuple(shape):
            raise ConfigurationError(f"labels shape {labels.shape} differs from the image shape {tuple(shape)}")
        if labels.dtype != np.uint8 and (labels.min(initial=0) < 0 or labels.max(initial=0) > 255):
            raise ConfigurationError("labels must be values 0-255 (uint8)")
        return np.array(labels, dtype=np.uint8, order="C", copy=True)


def link_editor(viewer: SliceViewer, editor: LabelEditor,
                on_patch: Callable[[Patch], Any] | None = None) -> EditCallback:
    """Apply the viewer's edits to ``editor`` and send the resulting patches back to the viewer.

    ``on_patch(patch)`` is called after each edit (e.g. to refresh volumes shown elsewhere).
    Returns the handler, so ``viewer.on_edit(handler, remove=True)`` unlinks them.
    """

    def handle(edit: Edit) -> None:
        patch = editor.apply(edit)
        viewer.apply_patch(patch.indices, patch.values)
        if on_patch is not None:
            on_patch(patch)

    viewer.on_edit(handle)
    return handle


def _segment_list(segments: Sequence[Mapping[str, Any]] | None, labels: np.ndarray) -> list[dict[str, Any]]:
    """Validated segment descriptions, with default colours and visibility filled in."""
    if segments is None:
        segments = [{"value": int(v), "label": f"segment {v}"} for v in np.unique(labels) if v]
    out = []
    for i, seg in enumerate(segments):
        try:
            value = int(seg["value"])
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(f"segments[{i}] needs an integer 'value', got {dict(seg)!r}") from None
        colour = str(seg.get("color", _DEFAULT_COLOURS[i % len(_DEFAULT_COLOURS)]))
        if not 1 <= value <= 255 or len(colour) != 7 or not colour.startswith("#"):
            raise ConfigurationError(f"segments[{i}]: value must be 1-255 and color '#rrggbb', got {dict(seg)!r}")
        out.append({"value": value, "label": str(seg.get("label", f"segment {value}")), "color": colour,
                    "visible": bool(seg.get("visible", True))})
    return out
