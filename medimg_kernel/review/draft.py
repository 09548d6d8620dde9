"""A reviewer's draft: the labels being edited plus what is needed to resume, as opaque bytes.

The platform keeps drafts without reading them (``PUT api/review/jobs/{id}/draft``); this module
is the only place that knows the format: an ``.npz`` (no pickles) with the label map (z, y, x,
``uint8``) and a JSON header (format version, series, shape, segment names, review seconds so
far). Decoding checks the draft against the series it is opened on.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SegmentationError

#: Bumped when the layout changes; older drafts are refused with a clear message.
DRAFT_FORMAT = 1


@dataclass(frozen=True)
class Draft:
    """Labels in progress on one series.

    Attributes
    ----------
    series_instance_uid
        The series the labels lie on.
    labels
        ``uint8`` label map, shape (z, y, x) of the series; value ``n`` is ``segments[n - 1]``.
    segments
        Segment names, in label order.
    review_seconds
        Time spent reviewing so far (seconds), carried across reloads.
    origin
        Where the labels came from first: ``"model"``, ``"draft"`` or ``"proposal:<actor>"``.
    """

    series_instance_uid: str
    labels: np.ndarray
    segments: tuple[str, ...]
    review_seconds: float = 0.0
    origin: str = "model"
    extra: dict[str, Any] = field(default_factory=dict)


def encode_draft(draft: Draft) -> bytes:
    """The bytes the platform stores (deflate-compressed; a 200×256×256 map is typically < 100 kB)."""
    header = {"format": DRAFT_FORMAT, "series_instance_uid": draft.series_instance_uid,
              "shape": list(draft.labels.shape), "segments": list(draft.segments),
              "review_seconds": float(draft.review_seconds), "origin": draft.origin, "extra": draft.extra}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=np.ascontiguousarray(draft.labels, dtype=np.uint8),
                        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    return buffer.getvalue()


def decode_draft(payload: bytes, *, series_instance_uid: str, shape: tuple[int, int, int]) -> Draft:
    """Read a draft made by :func:`encode_draft` and check it belongs to ``series_instance_uid``.

    Raises
    ------
    SegmentationError
        Not a draft, a newer format, another series, or labels of another shape.
    """
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes())
            labels = archive["labels"]
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise SegmentationError(f"the saved draft is not readable ({type(exc).__name__}); discard it") from exc
    if header.get("format") != DRAFT_FORMAT:
        raise SegmentationError(f"the saved draft has format {header.get('format')}, this dashboard reads "
                                f"{DRAFT_FORMAT}; discard it")
    if header.get("series_instance_uid") != series_instance_uid:
        raise SegmentationError("the saved draft belongs to another series; discard it")
    if tuple(labels.shape) != tuple(shape) or labels.dtype != np.uint8:
        raise SegmentationError(f"the saved draft's labels have shape {labels.shape}, the series {tuple(shape)}; "
                                "discard it")
    return Draft(series_instance_uid, labels, tuple(header.get("segments", ())),
                 float(header.get("review_seconds", 0.0)), str(header.get("origin", "draft")),
                 dict(header.get("extra", {})))
