"""Writing masks as an RT Structure Set referencing their series: :func:`write_rtstruct`
(conventions in :mod:`medimg_kernel.rtstruct`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__
from ..anatomy import ANATOMICAL_STRUCTURE, SegmentType, get_segment_type
from ..errors import RTStructError
from ..volume import Volume
from .content import RT_STRUCTURE_SET_STORAGE, STUDY_REFERENCE_SOP_CLASS, slices_of
from .contours import trace_boundaries

logger = logging.getLogger(__name__)

__all__ = ["write_rtstruct"]


def write_rtstruct(
    volume: Volume,
    masks: np.ndarray,
    segments: Sequence[str | SegmentType],
    *,
    structure_set_label: str = "MEDIMG",
    series_description: str | None = None,
    series_number: int = 400,
    generation_algorithm: str = "MANUAL",
    interpreted_types: Sequence[str] | None = None,
    content_creator: str | None = None,
    content_datetime: datetime | None = None,
) -> Dataset:
    """Trace masks on ``volume``'s grid into an RT Structure Set referencing its series.

    Parameters
    ----------
    volume
        The series the masks are drawn on, read with :func:`~medimg_kernel.series.read_series`
        (``sources`` required: their patient and study attributes are copied, every slice listed).
    masks
        Boolean ``(len(segments), z, y, x)`` (ROIs may overlap) or an integer label map
        ``(z, y, x)`` where value ``i + 1`` is ``segments[i]`` and 0 background.
    segments
        Registry names or :class:`~medimg_kernel.anatomy.SegmentType` objects: ROIName, ROI
        Display Color and codes (ROINumber ``i + 1`` is ``segments[i]``).
    structure_set_label
        StructureSetLabel (at most 16 characters).
    series_description
        SeriesDescription; default ``"RTSTRUCT "`` and the ROI names.
    series_number
        SeriesNumber of the new series.
    generation_algorithm
        ROI Generation Algorithm of every ROI: ``"MANUAL"``, ``"SEMIAUTOMATIC"`` or ``"AUTOMATIC"``.
    interpreted_types
        RT ROI Interpreted Type per ROI (``"ORGAN"``, ``"GTV"``, ``"PTV"``...); default ``"ORGAN"``
        for anatomical structures and empty for findings.
    content_creator
        ROIInterpreter of every ROI (DICOM PN form ``"FAMILY^GIVEN"``); default empty.
    content_datetime
        StructureSetDate/Time and SeriesDate/Time; default now (local time).

    Returns
    -------
    pydicom.dataset.Dataset
        An RT Structure Set Storage object with file meta information, ready for ``save_as`` or STOW-RS.

    Raises
    ------
    RTStructError
        No sources or sources off the grid, masks of another shape, an empty mask (an ROI
        without a contour), duplicate segments or an invalid argument; nothing is returned then.
    """
    uid = "<new>"
    entries = [get_segment_type(s) for s in segments]
    names = [e.name for e in entries]
    if len(set(names)) != len(names) or not names:
        raise RTStructError(uid, f"segments {names} must be at least one, each once")
    stack = _mask_stack(np.asarray(masks), volume.shape, len(entries), uid)
    for entry, mask in zip(entries, stack, strict=True):
        if not mask.any():
            raise RTStructError(uid, "the mask is empty: an ROI without contours encloses nothing; leave the "
                                     "segment out", roi=entry.name)
    if generation_algorithm not in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"):
        raise RTStructError(uid, f"generation_algorithm {generation_algorithm!r} is not MANUAL, SEMIAUTOMATIC or "
                                 "AUTOMATIC")
    if interpreted_types is not None and len(interpreted_types) != len(entries):
        raise RTStructError(uid, f"{len(interpreted_types)} interpreted_types for {len(entries)} segments")
    if not 0 < len(structure_set_label) <= 16:
        raise RTStructError(uid, f"structure_set_label {structure_set_label!r} must be 1-16 characters")
    slices = slices_of(volume, uid)
    when = content_datetime or datetime.now()
    ds = _base(slices[0], series_description or f"RTSTRUCT {', '.join(names)}"[:64], series_number, when)
    ds.StructureSetLabel = structure_set_label
    ds.StructureSetName = ", ".join(names)[:64]
    ds.StructureSetDate, ds.StructureSetTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame(volume, slices)]
    types = interpreted_types or ["ORGAN" if e.property_category == ANATOMICAL_STRUCTURE else "" for e in entries]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for number, (entry, mask, interpreted) in enumerate(zip(entries, stack, types, strict=True), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = volume.frame_of_reference_uid
        roi.ROIName = entry.name
        roi.ROIGenerationAlgorithm = generation_algorithm
        ds.StructureSetROISequence.append(roi)
        ds.ROIContourSequence.append(_roi_contour(number, entry, mask, volume, slices))
        ds.RTROIObservationsSequence.append(_observation(number, entry, interpreted, content_creator))
    logger.debug("RTSTRUCT %s: %d ROIs", ds.SOPInstanceUID, len(entries))
    return ds


def _mask_stack(masks: np.ndarray, shape: tuple[int, int, int], n: int, uid: str) -> np.ndarray:
    """``masks`` as boolean ``(n, z, y, x)``."""
    if masks.ndim == 3 and masks.shape == shape and np.issubdtype(masks.dtype, np.integer):
        if masks.min() < 0 or masks.max() > n:
            raise RTStructError(uid, f"label values {int(masks.min())}..{int(masks.max())} do not fit {n} segments "
                                     "(0 background, i + 1 for segments[i])")
        return np.stack([masks == i + 1 for i in range(n)])
    if masks.ndim == 4 and masks.shape == (n, *shape):
        if masks.dtype != bool and not np.all((masks == 0) | (masks == 1)):
            raise RTStructError(uid, "masks (n, z, y, x) must be boolean (or 0/1)")
        return masks.astype(bool, copy=False)
    raise RTStructError(uid, f"masks of shape {masks.shape} ({masks.dtype}) are neither a label map {shape} nor "
                             f"boolean masks {(n, *shape)} (segments, z, y, x) on the volume's grid")


def _base(first: Dataset, series_description: str, series_number: int, when: datetime) -> hd.SOPClass:
    """SOP Common, RT Series and General Equipment, with the series' patient and study."""
    ds = hd.SOPClass(
        study_instance_uid=first.StudyInstanceUID, series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), sop_class_uid=RT_STRUCTURE_SET_STORAGE, instance_number=1,
        modality="RTSTRUCT", manufacturer="medimg-platform", manufacturer_model_name="medimg_kernel",
        software_versions=f"medimg_kernel {__version__}", device_serial_number="0",
        series_description=series_description, series_date=when.date(), series_time=when.time(),
        specific_character_set=first.get("SpecificCharacterSet") or None,
    )
    ds.copy_patient_and_study_information(first)
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID  # Frame of Reference module: the series'
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator") or None
    ds.OperatorsName = None  # RT Series: type 2
    return ds


def _image_reference(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def _referenced_frame(volume: Volume, slices: list[Dataset]) -> Dataset:
    """Referenced Frame of Reference > RT Referenced Study > RT Referenced Series > every slice."""
    series = Dataset()
    series.SeriesInstanceUID = volume.series_instance_uid or slices[0].SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(ds) for ds in slices]
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_REFERENCE_SOP_CLASS
    study.ReferencedSOPInstanceUID = slices[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = volume.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    return frame


def _roi_contour(number: int, entry: SegmentType, mask: np.ndarray, volume: Volume, slices: list[Dataset]) -> Dataset:
    """ROIContourSequence item: one CLOSED_PLANAR contour per boundary loop on each slice."""
    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = list(entry.rgb)
    contours = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for loop in trace_boundaries(mask[k]):
            index = np.column_stack([np.full(len(loop), float(k)), loop[:, 1], loop[:, 0]])
            contour = Dataset()
            contour.ContourImageSequence = [_image_reference(slices[k])]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(loop)
            contour.ContourNumber = len(contours) + 1
            contour.ContourData = [f"{v:.4f}" for v in volume.index_to_lps(index).ravel()]
            contours.append(contour)
    item.ContourSequence = DicomSequence(contours)
    return item


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _observation(number: int, entry: SegmentType, interpreted: str, creator: str | None) -> Dataset:
    """RTROIObservationsSequence item with the segment type's codes."""
    item = Dataset()
    item.ObservationNumber = number
    item.ReferencedROINumber = number
    item.ROIObservationLabel = entry.name[:16]
    item.SegmentedPropertyCategoryCodeSequence = [_code_item(entry.property_category)]
    identification = _code_item(entry.property_type)
    if entry.property_type_modifier is not None:
        identification.SegmentedPropertyTypeModifierCodeSequence = [_code_item(entry.property_type_modifier)]
    item.RTROIIdentificationCodeSequence = [identification]
    item.RTROIInterpretedType = interpreted or None
    item.ROIInterpreter = creator or None
    return item
