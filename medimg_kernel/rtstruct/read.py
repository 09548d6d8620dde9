"""Reading an RT Structure Set onto its series: :func:`read_rtstruct` (conventions in
:mod:`medimg_kernel.rtstruct`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from ..anatomy import ABNORMAL_STRUCTURE, ANATOMICAL_STRUCTURE, SegmentType, find_segment_type, segment_type_from_codes
from ..errors import RTStructError
from ..volume import Volume
from .content import CLOSED_TYPES, RT_STRUCTURE_SET_STORAGE, StructureSet, StructureSetROI, slice_tolerance_mm, slices_of
from .contours import fill_polygons

logger = logging.getLogger(__name__)

__all__ = ["read_rtstruct"]


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
    slices = slices_of(volume, uid)
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
    tolerance = slice_tolerance_mm(volume)
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
