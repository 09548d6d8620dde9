"""RT Structure Sets in and out: ROI contours ↔ boolean masks on the referenced image series.

What radiotherapy planning systems (and 3D Slicer's SlicerRT, plastimatch, rt-utils) exchange.
:func:`read_rtstruct` rasterises each ROI's closed planar contours onto a
:class:`~medimg_kernel.volume.Volume` read from the series the structure set references;
:func:`write_rtstruct` traces masks on that volume into contours and returns an RT Structure Set
Storage object referencing the series.

Conventions
-----------
* Masks are boolean ``(n_rois, z, y, x)`` on the volume's grid; contour points are LPS mm
  (ContourData), one closed polygon per boundary on a slice, the last point joining the first.
* **A voxel is inside an ROI** when its centre lies inside the ROI's contours on its slice by the
  **even-odd rule** (a contour inside another is a hole, one inside the hole an island again:
  CLOSED_PLANAR and CLOSED_PLANAR_XOR alike), or on a contour line (within
  :data:`medimg_kernel.contours.ON_EDGE_ATOL` voxels): see :mod:`medimg_kernel.contours`.
  Keyhole contours (an outline joined to its hole by a cut of zero width) read the same way,
  except that voxel centres exactly on the cut are inside.
* **Contours are written along voxel borders** (outer boundaries and holes as separate contours,
  corners where voxels touch only diagonally cut by a quarter voxel), so write → read gives the
  masks back voxel for voxel.
* **A contour lies on a slice** when all its points are within
  ``max(POSITION_ATOL_MM, SPACING_RTOL * dz)`` mm of that slice's plane along the normal (the
  tolerances :mod:`medimg_kernel.series.geometry` accepts for the slices themselves); one off the
  slices, not planar or beyond the first or last slice is refused, naming the ROI and where it is.
* The structure set must be on the volume's Frame of Reference, reference the volume's series
  (where it names one), and its contours' ContourImageSequence, where given, the slice each
  contour lies on. Every mismatch is refused with :class:`~medimg_kernel.errors.RTStructError`.
* ROIs with no closed contour (POINT markers such as isocentres, OPEN_PLANAR lines, ROIs without
  contours) have no volume: :func:`read_rtstruct` lists them in :attr:`StructureSet.skipped`, and
  refuses them when asked for by name.
* Segment names, colours (ROIDisplayColor) and codes come from
  :class:`~medimg_kernel.anatomy.SegmentType`: the ROI name is the type's name, RT ROI
  Identification Code Sequence its property type (with its modifier), Segmented Property
  Category Code Sequence its category; RT ROI Interpreted Type is ``ORGAN`` for anatomical
  structures and empty for findings unless given.

Library choice: rt-utils (the maintained candidate; last release 2023) traces contours with
OpenCV through voxel *centres* and fills them back with OpenCV, so a round trip loses or gains
border voxels, it builds from a folder of files rather than a Volume in memory, and it would add
OpenCV (~60 MB) to every kernel. The geometry here is ~150 lines of numpy
(:mod:`medimg_kernel.contours`), exact by construction; highdicom's ``SOPClass`` provides the
SOP Common, series, equipment, patient and study attributes, as for the SEGs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from . import __version__
from .anatomy import (
    ABNORMAL_STRUCTURE,
    ANATOMICAL_STRUCTURE,
    SegmentType,
    find_segment_type,
    get_segment_type,
    segment_type_from_codes,
)
from .contours import fill_polygons, trace_boundaries
from .errors import RTStructError
from .series.geometry import INPLANE_RTOL, ORIENTATION_ATOL, POSITION_ATOL_MM, SPACING_RTOL
from .volume import Volume

logger = logging.getLogger(__name__)

__all__ = ["RT_STRUCTURE_SET_STORAGE", "StructureSet", "StructureSetROI", "read_rtstruct", "write_rtstruct"]

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


# --- the referenced series ---------------------------------------------------------------------


def _slices(volume: Volume, uid: str) -> list[Dataset]:
    """``volume.sources`` in slice order (``[k]`` is slice ``k``), each checked to lie on the grid."""
    if not volume.sources:
        raise RTStructError(uid, "the volume has no source instances (Volume.sources is empty): an RT Structure "
                                 "Set references its image series; read the volume with read_series")
    tolerance = max(POSITION_ATOL_MM, SPACING_RTOL * volume.spacing[0])
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


# --- reading -----------------------------------------------------------------------------------


def read_rtstruct(rtstruct: Dataset, volume: Volume, *, rois: Sequence[str] | None = None) -> StructureSet:
    """Rasterise an RT Structure Set's ROIs onto ``volume`` (see the module for the conventions).

    Parameters
    ----------
    rtstruct
        An RT Structure Set Storage dataset.
    volume
        The referenced series as read by :func:`~medimg_kernel.series.read_series` (its
        ``sources`` and Frame of Reference UID are checked against the structure set).
    rois
        ROINames to read, in this order; default every ROI with a closed contour.

    Returns
    -------
    StructureSet
        Boolean masks ``(n_rois, z, y, x)`` and each ROI's name, colour, type and codes.

    Raises
    ------
    RTStructError
        Not an RT Structure Set; another Frame of Reference or series; a contour off the slices,
        not planar, or referencing an image that is not its slice; a requested ROI that is
        missing or has no closed contour. The message names the structure set, the ROI and where.
    """
    uid = str(rtstruct.get("SOPInstanceUID", "")) or None
    if rtstruct.get("SOPClassUID") != RT_STRUCTURE_SET_STORAGE or "StructureSetROISequence" not in rtstruct:
        raise RTStructError(uid, f"not an RT Structure Set (SOP Class {rtstruct.get('SOPClassUID')}, Modality "
                                 f"{rtstruct.get('Modality')}); read a SEG with read_seg")
    uid = uid or "<unknown>"
    slices = _slices(volume, uid)
    _check_references(rtstruct, volume, uid)
    contours = {int(item.ReferencedROINumber): item for item in rtstruct.get("ROIContourSequence", [])}
    observations = {int(item.ReferencedROINumber): item for item in rtstruct.get("RTROIObservationsSequence", [])}
    by_name = {str(item.ROIName): item for item in rtstruct.StructureSetROISequence}
    wanted = list(rtstruct.StructureSetROISequence) if rois is None else [_named(by_name, name, uid) for name in rois]
    read, masks, skipped = [], [], []
    for item in wanted:
        name, number = str(item.ROIName), int(item.ROINumber)
        contour_item = contours.get(number, Dataset())
        closed = [c for c in contour_item.get("ContourSequence", []) if c.get("ContourGeometricType") in CLOSED_TYPES]
        if not closed:
            kinds = sorted({str(c.get("ContourGeometricType")) for c in contour_item.get("ContourSequence", [])})
            why = f"{'/'.join(kinds)} contours only" if kinds else "no contours"
            if rois is not None:
                raise RTStructError(uid, f"the ROI has {why}, no closed planar contour: it encloses no volume",
                                    roi=name)
            skipped.append((name, why))
            continue
        if str(item.get("ReferencedFrameOfReferenceUID", volume.frame_of_reference_uid)) != volume.frame_of_reference_uid:
            raise RTStructError(uid, f"the ROI is on Frame of Reference {item.ReferencedFrameOfReferenceUID}, the "
                                     f"volume on {volume.frame_of_reference_uid}", roi=name)
        masks.append(_rasterise(closed, volume, slices, uid, name))
        read.append(_roi(item, contour_item, observations.get(number, Dataset())))
    array = np.stack(masks) if masks else np.zeros((0, *volume.shape), bool)
    logger.debug("RTSTRUCT %s: %d ROIs read, %d skipped", uid, len(read), len(skipped))
    return StructureSet(array, tuple(read), tuple(skipped))


def _named(by_name: dict[str, Dataset], name: str, uid: str) -> Dataset:
    if name not in by_name:
        raise RTStructError(uid, f"no ROI of that name; the structure set has {sorted(by_name)}", roi=name)
    return by_name[name]


def _check_references(rtstruct: Dataset, volume: Volume, uid: str) -> None:
    """The Frame of Reference and the series the structure set names are the volume's."""
    frames = {str(f.get("FrameOfReferenceUID", "")): f for f in rtstruct.get("ReferencedFrameOfReferenceSequence", [])}
    if frames and volume.frame_of_reference_uid not in frames:
        raise RTStructError(uid, f"it references Frame of Reference {', '.join(sorted(frames))}, the volume (series "
                                 f"{volume.series_instance_uid}) is on {volume.frame_of_reference_uid or 'none'}; "
                                 "read the series it was drawn on")
    frame = frames.get(volume.frame_of_reference_uid, Dataset())
    series = [str(s.SeriesInstanceUID) for study in frame.get("RTReferencedStudySequence", [])
              for s in study.get("RTReferencedSeriesSequence", [])]
    if series and volume.series_instance_uid not in series:
        raise RTStructError(uid, f"it references series {', '.join(series)}, the volume is series "
                                 f"{volume.series_instance_uid}; read the series it was drawn on")


def _rasterise(contours: list[Dataset], volume: Volume, slices: list[Dataset], uid: str, name: str) -> np.ndarray:
    """One ROI's closed contours as a boolean ``(z, y, x)`` mask (even-odd per slice)."""
    tolerance = max(POSITION_ATOL_MM, SPACING_RTOL * volume.spacing[0])
    polygons: dict[int, list[np.ndarray]] = {}
    for number, contour in enumerate(contours, start=1):
        where = f"contour {contour.get('ContourNumber', number)}"
        data = np.asarray([float(v) for v in contour.get("ContourData") or []], float)
        if data.size < 9 or data.size % 3 or not np.all(np.isfinite(data)):
            raise RTStructError(uid, f"{where}: ContourData holds {data.size} numbers, not three per point for "
                                     "at least three finite points", roi=name)
        points = data.reshape(-1, 3)
        index = volume.lps_to_index(points)
        height = float(np.mean(index[:, 0]))
        k = int(np.rint(height))
        z_mm = float(np.mean(points @ volume.direction[0]))
        if np.ptp(index[:, 0]) * volume.spacing[0] > 2 * tolerance:
            raise RTStructError(uid, f"{where} is not in a slice plane: its points spread "
                                     f"{np.ptp(index[:, 0]) * volume.spacing[0]:.3f} mm along the slice normal",
                                roi=name)
        if abs(height - k) * volume.spacing[0] > tolerance or not 0 <= k < volume.shape[0]:
            raise RTStructError(uid, f"{where} lies at {z_mm:.3f} mm along the slice normal, not on a slice of the "
                                     f"volume (slices every {volume.spacing[0]:g} mm from "
                                     f"{float(np.dot(volume.origin, volume.direction[0])):.3f} mm, {volume.shape[0]} "
                                     f"slices, tolerance {tolerance:g} mm)", roi=name)
        for image in contour.get("ContourImageSequence", []):
            if image.get("ReferencedSOPInstanceUID") != slices[k].SOPInstanceUID:
                raise RTStructError(uid, f"{where} lies on slice {k} (SOP Instance {slices[k].SOPInstanceUID}) but "
                                         f"references image {image.get('ReferencedSOPInstanceUID')}", roi=name)
        polygons.setdefault(k, []).append(index[:, [2, 1]])  # (x, y) = (i, j)
    mask = np.zeros(volume.shape, bool)
    for k, on_slice in polygons.items():
        mask[k] = fill_polygons(on_slice, volume.shape[1:])
    return mask


def _roi(item: Dataset, contour_item: Dataset, observation: Dataset) -> StructureSetROI:
    name = str(item.ROIName)
    color = contour_item.get("ROIDisplayColor")
    rgb = tuple(int(c) for c in color) if color is not None and len(color) == 3 else None
    return StructureSetROI(
        number=int(item.ROINumber), name=name, rgb=rgb,  # type: ignore[arg-type]
        interpreted_type=str(observation.get("RTROIInterpretedType", "") or ""),
        generation_algorithm=str(item.get("ROIGenerationAlgorithm", "") or ""),
        segment=_segment_of(name, rgb, observation),  # type: ignore[arg-type]
    )


def _code(item: Dataset) -> Code:
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))


def _segment_of(name: str, rgb: tuple[int, int, int] | None, observation: Dataset) -> SegmentType | str:
    """The ROI's segment type from its codes, or its name when it has none."""
    identification = observation.get("RTROIIdentificationCodeSequence") or []
    if not identification:
        return name
    code = identification[0]
    modifiers = code.get("SegmentedPropertyTypeModifierCodeSequence") or []
    modifier = _code(modifiers[0]) if modifiers else None
    categories = observation.get("SegmentedPropertyCategoryCodeSequence") or []
    if categories:
        return segment_type_from_codes(_code(categories[0]), _code(code), modifier, label=name, rgb=rgb)
    for category in (ANATOMICAL_STRUCTURE, ABNORMAL_STRUCTURE):  # no category given: the registry's entry
        found = find_segment_type(category, _code(code), modifier)
        if found is not None:
            return replace(found, rgb=rgb or found.rgb)
    return name


# --- writing -----------------------------------------------------------------------------------


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
    slices = _slices(volume, uid)
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
