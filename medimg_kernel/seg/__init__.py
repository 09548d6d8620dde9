"""Segmentations as DICOM SEG: writing, reading and describing them (with highdicom).

* :mod:`.sop`: :func:`write_seg`, :func:`read_seg`, :func:`read_seg_masks`, :func:`read_seg_types`
  (segments' coded concepts, preserved), :func:`describe_seg`.
* :mod:`.content`: ``write_seg``'s arguments checked and converted for highdicom, and
  :class:`AlgorithmIdentification`, the algorithm of a model output.
* :mod:`.frames`: pairing frames with the slices of a volume, decoding them into masks.
* :mod:`.highdicom_speedups`: a memoisation of highdicom installed by :mod:`.sop`.
* :mod:`.frame_groups`: the per-frame functional groups of a new SEG encoded once (same bytes).

Modules here import in one direction (``sop`` → ``content``, ``frames``, ``frame_groups``); outside this
package they import :mod:`medimg_kernel.anatomy`, :mod:`medimg_kernel.collector`, :mod:`medimg_kernel.errors`,
:mod:`medimg_kernel.volume` and :mod:`medimg_kernel.series.geometry`; never :mod:`medimg_hub`.
"""

from .content import MODEL_PREFIX, SEG_SOP_CLASS_UIDS, AlgorithmIdentification
from .frames import POSITION_TOLERANCE_MM
from .sop import SegInfo, describe_seg, read_seg, read_seg_masks, read_seg_types, write_seg

__all__ = [
    "AlgorithmIdentification", "SegInfo", "write_seg", "read_seg", "read_seg_masks", "read_seg_types", "describe_seg",
    "MODEL_PREFIX", "SEG_SOP_CLASS_UIDS", "POSITION_TOLERANCE_MM",
]
