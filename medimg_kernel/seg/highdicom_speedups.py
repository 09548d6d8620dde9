"""A speed-up of highdicom that changes no output, installed by :mod:`medimg_kernel.seg.sop`.

Why: highdicom 0.28's ``Segmentation`` constructor calls ``is_multiframe_image`` once
per source image. That function decides "multi-frame" from the IOD alone (its
docstring: whether the IOD allows multiple frames) but scans the IOD's module tables
on every call: ~0.12 ms × 200 slices, a quarter of ``write_seg``. The answer depends
only on SOPClassUID, so memoising it by SOP Class UID changes no output.

:func:`install` replaces ``highdicom.utils.is_multiframe_image`` only while that name
still refers to the function memoised here, so a highdicom release that changes or
moves it is left alone (and the patch silently stops applying).
"""

from __future__ import annotations

import functools

import highdicom.utils
from highdicom._standard_utils import is_multiframe_image
from pydicom.dataset import Dataset


@functools.lru_cache(maxsize=64)
def _iod_is_multiframe(sop_class_uid: str) -> bool:
    probe = Dataset()
    probe.SOPClassUID = sop_class_uid
    return bool(is_multiframe_image(probe))


def _is_multiframe_image_by_class(dataset: Dataset) -> bool:
    """highdicom's ``is_multiframe_image``, memoised by SOP Class UID (see the module docstring)."""
    uid = dataset.get("SOPClassUID")
    return _iod_is_multiframe(str(uid)) if uid else bool(is_multiframe_image(dataset))


def install() -> None:
    """Use :func:`_is_multiframe_image_by_class` in ``highdicom.utils`` (idempotent)."""
    # Installed only where highdicom.utils still uses the function we memoise.
    if getattr(highdicom.utils, "is_multiframe_image", None) is is_multiframe_image:
        highdicom.utils.is_multiframe_image = _is_multiframe_image_by_class
