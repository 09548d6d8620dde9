"""Reading image series: one DICOM series of single-frame slices into a Volume.

* :mod:`.read`: :func:`read_series` (collecting headers, checking and stacking instances) and
  :func:`read_headers` (the headers of files, e.g. a SEG's source instances).
* :mod:`.instance`: :class:`~.instance.Instance`, one source instance's header and attributes.
* :mod:`.geometry`: slice order, spacing, direction and their tolerance constants.
* :mod:`.pixels`: reading and rescaling the pixel data.

Modules here import from each other only in that direction (``read`` → ``geometry`` /
``pixels`` → ``instance``) and, outside this package, only :mod:`medimg_kernel.errors`,
:mod:`medimg_kernel.volume`, :mod:`medimg_kernel.collector`, :mod:`medimg_kernel.dicom_header` and
:mod:`medimg_kernel.dicomweb`; never :mod:`medimg_hub`.
"""

from .geometry import GAP_FACTOR, INPLANE_RTOL, ORIENTATION_ATOL, POSITION_ATOL_MM, SPACING_RTOL
from .read import read_headers, read_series

__all__ = ["read_series", "read_headers", "ORIENTATION_ATOL", "POSITION_ATOL_MM", "SPACING_RTOL", "INPLANE_RTOL", "GAP_FACTOR"]
