"""What an RT Structure Set holds as read (:class:`StructureSet`, :class:`StructureSetROI`), its
constants, and the referenced series' slices in order (:func:`slices_of`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from ..anatomy import SegmentType
from ..errors import RTStructError
from ..series.geometry import INPLANE_RTOL, ORIENTATION_ATOL, POSITION_ATOL_MM, SPACING_RTOL
from ..volume import Volume

__all__ = ["CLOSED_TYPES", "RT_STRUCTURE_SET_STORAGE", "STUDY_REFERENCE_SOP_CLASS", "StructureSet",
           "StructureSetROI", "slice_tolerance_mm", "slices_of"]

#: SOP Class UID of RT Structure Set Storage.
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: RT Referenced Study Sequence > Referenced SOP Class UID, as PS3.3 C.8.8.5 gives it (Detached
#: Study Management, retired as a service but still the value this attribute takes).
STUDY_REFERENCE_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
#: Contour Geometric Types that enclose an area.
CLOSED_TYPES = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")


@dataclass(frozen=True)
class StructureSetROI:
    """One ROI of a structure set, as read.

    Attributes
    ----------
    number
        ROINumber.
    name
        ROIName.
    rgb
        ROIDisplayColor ``(r, g, b)``, 0-255, or ``None`` when absent.
    interpreted_type
        RT ROI Interpreted Type (``"ORGAN"``, ``"PTV"``, ``"EXTERNAL"``...; ``""`` when empty).
    generation_algorithm
        ROI Generation Algorithm (``"AUTOMATIC"``, ``"SEMIAUTOMATIC"``, ``"MANUAL"`` or ``""``).
    segment
        A :class:`~medimg_kernel.anatomy.SegmentType` when the ROI is coded (RT ROI Identification
        Code Sequence: the registry's entry for the codes, else one built from them), otherwise
        the ROI name, which :func:`~medimg_kernel.seg.write_seg` looks up in the registry.
    """

    number: int
    name: str
    rgb: tuple[int, int, int] | None
    interpreted_type: str
    generation_algorithm: str
    segment: SegmentType | str


@dataclass(frozen=True, eq=False)
class StructureSet:
    """What :func:`read_rtstruct` returns.

    Attributes
    ----------
    masks
        Boolean ``(n_rois, z, y, x)`` on the volume's grid; ``masks[i]`` is ``rois[i]``.
    rois
        The ROIs read, in StructureSetROISequence order.
    skipped
        ``(ROIName, why)`` of the ROIs without a closed contour (points, open lines, none).
    """

    masks: np.ndarray
    rois: tuple[StructureSetROI, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """ROINames, in ``masks`` order."""
        return tuple(roi.name for roi in self.rois)

    @property
    def segments(self) -> tuple[SegmentType | str, ...]:
        """Each ROI's segment type (or name), e.g. for ``write_seg(volume, masks, segments, ...)``."""
        return tuple(roi.segment for roi in self.rois)


def slice_tolerance_mm(volume: Volume) -> float:
    """How far (mm, along the normal) a contour or a source may lie from its slice's plane."""
    return max(POSITION_ATOL_MM, SPACING_RTOL * volume.spacing[0])


def slices_of(volume: Volume, uid: str) -> list[Dataset]:
    """``volume.sources`` in slice order (``[k]`` is slice ``k``), each checked to lie on the grid."""
    if not volume.sources:
        raise RTStructError(uid, "the volume has no source instances (Volume.sources is empty): an RT Structure "
                                 "Set references its image series; read the volume with read_series")
    tolerance = slice_tolerance_mm(volume)
    expected_iop = np.concatenate([volume.direction[2], volume.direction[1]])
    slices: list[Dataset | None] = [None] * volume.shape[0]
    for ds in volume.sources:
        sop = ds.get("SOPInstanceUID", "?")
        try:
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            index = volume.lps_to_index([float(v) for v in ds.ImagePositionPatient])
        except (AttributeError, TypeError, ValueError) as exc:
            raise RTStructError(uid, f"source {sop} has no usable ImageOrientationPatient/ImagePositionPatient") from exc
        k = int(np.rint(index[0]))
        in_plane = np.abs(index[1:]) * np.array(volume.spacing[1:])
        if (iop.shape != (6,) or not np.allclose(iop, expected_iop, atol=ORIENTATION_ATOL)
                or abs(index[0] - k) * volume.spacing[0] > tolerance
                or np.any(in_plane > np.maximum(POSITION_ATOL_MM, INPLANE_RTOL * np.array(volume.spacing[1:])))
                or not 0 <= k < volume.shape[0] or slices[k] is not None):
            raise RTStructError(uid, f"source {sop} is not a slice of the volume's grid (its orientation or position "
                                     "differs, or two sources share a slice); read the volume with read_series")
        slices[k] = ds
    return slices  # type: ignore[return-value]  # len(sources) == shape[0] and no slot twice: all filled

