"""Structured reports: TID 1500 Measurement Reports of segment volumes (with highdicom).

* :mod:`.sop`: :func:`write_sr`, :func:`read_sr`, :func:`read_sr_report` and :class:`VolumeReport`.
* :mod:`.content`: the report's content items: :func:`segment_volumes_mm3`, the TID 1411
  measurement groups and the observation context.

``sop`` imports ``content``, never the reverse; outside this package they import
:mod:`medimg_kernel.seg`, :mod:`medimg_kernel.anatomy`, :mod:`medimg_kernel.errors` and
:mod:`medimg_kernel.volume`; never :mod:`medimg_hub`.
"""

from .content import segment_volumes_mm3
from .sop import VolumeReport, read_sr, read_sr_report, write_sr

__all__ = ["VolumeReport", "segment_volumes_mm3", "write_sr", "read_sr", "read_sr_report"]
