"""Synthetic CT-like abdominal phantoms with ground-truth organ labels.

The anatomy of one synthetic patient is drawn from a seed in patient space (LPS,
millimetres), independently of any scanner. It is then sampled on a site's voxel grid
(:class:`SiteProfile`), so the same patient can be imaged with any spacing, field of view
and orientation, and the labels stay where the anatomy is. Sites differ in slice spacing,
field of view, noise and (one of them) an oblique grid.

* :mod:`.anatomy`: tissue codes and attenuations, label values, the structures of one
  patient as deformed ellipsoids (:func:`~.anatomy.draw_anatomy`).
* :mod:`.sampling`: tissue codes on a voxel grid, and the organ-volume calibration.
* :mod:`.imaging`: :func:`make_phantom`, blur and noise.
* :mod:`.sites`: the sites' acquisition profiles (:class:`SiteProfile`, :data:`DEFAULT_SITES`,
  :func:`site_profiles`).
* :mod:`.demo`: the demo sites on disk, as DICOM CT series with ground-truth SEGs
  (:func:`~.demo.generate_demo`; what ``make up`` loads, and what tests and notebooks generate).

Every public name of these modules that callers use is importable from here. Modules
import in one direction (``imaging`` → ``sampling`` → ``anatomy``; ``imaging`` → ``sites``)
and, outside this package, only :mod:`medimg_kernel.errors` and :mod:`medimg_kernel.volume`
(:mod:`.demo` also writes DICOM with :mod:`medimg_kernel.synthetic` and, lazily, :mod:`medimg_kernel.seg`);
never :mod:`medimg_hub`. Everything here is synthetic; no real patient data is used.
"""

from .anatomy import (
    AIR,
    AORTA,
    BODY_CC_RADIUS_MM,
    BODY_HALF_DEPTH_MM,
    BODY_HALF_WIDTH_MM,
    BODY_SHAPE_SD,
    CANCELLOUS,
    CORTICAL,
    DISC,
    FAT,
    FAT_MM,
    KIDNEY,
    KIDNEY_ML,
    LABEL_KIDNEY,
    LABEL_LIVER,
    LABEL_SPLEEN,
    LIVER,
    LIVER_ML,
    MUSCLE,
    MUSCLE_MM,
    OFF_CENTRE_SD_MM,
    ORGAN_HU_SD,
    SCAN_CENTRE_SD_MM,
    SEGMENT_LABELS,
    SHAPE_SD,
    SPLEEN,
    SPLEEN_ML,
    TABLE_Z_MM,
    TABLE_Z_SD_MM,
    TISSUE_HU,
    VISCERA,
)
from .imaging import PSF_SIGMA_MM, STORED_HU_RANGE, make_phantom
from .sampling import CALIBRATION_MM, CALIBRATION_PASSES, DISC_MM, VERTEBRAL_SHELL_FRACTION, Box
from .sites import DEFAULT_SITES, SiteProfile, site_profiles

__all__ = [
    "make_phantom", "SiteProfile", "DEFAULT_SITES", "site_profiles",
    "LABEL_LIVER", "LABEL_SPLEEN", "LABEL_KIDNEY", "SEGMENT_LABELS",
    "AIR", "FAT", "MUSCLE", "VISCERA", "LIVER", "SPLEEN", "KIDNEY", "AORTA", "CANCELLOUS", "CORTICAL", "DISC",
    "TISSUE_HU", "ORGAN_HU_SD", "LIVER_ML", "SPLEEN_ML", "KIDNEY_ML", "CALIBRATION_MM", "CALIBRATION_PASSES",
    "BODY_HALF_WIDTH_MM", "BODY_HALF_DEPTH_MM", "BODY_CC_RADIUS_MM", "FAT_MM", "MUSCLE_MM", "OFF_CENTRE_SD_MM",
    "TABLE_Z_MM", "TABLE_Z_SD_MM", "SCAN_CENTRE_SD_MM", "SHAPE_SD", "BODY_SHAPE_SD", "PSF_SIGMA_MM",
    "STORED_HU_RANGE", "VERTEBRAL_SHELL_FRACTION", "DISC_MM", "Box",
]
