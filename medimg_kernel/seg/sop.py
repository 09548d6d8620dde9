"""Write and read segmentations as DICOM Segmentation (SEG) instances with highdicom.

Conventions (DESIGN.md §4):

* One SEG instance per series. SeriesDescription is the segmentation type id
  (``"liver"``) for reviewed / ground-truth results and ``"model_" + type_id``
  for model outputs (segments with SegmentAlgorithmType ``AUTOMATIC`` and a
  SegmentationAlgorithmIdentificationSequence); reviewed results are
  ``MANUAL`` with the reviewer in ContentCreatorName.
* ContentDate/ContentTime (and SeriesDate/SeriesTime) are the creation time.
* A reviewed SEG references the model SEG it corrects as a *further source
  image* (highdicom's ``further_source_images``): the model SEG then appears in
  SourceImageSequence and in ReferencedSeriesSequence >
  ReferencedInstanceSequence (Common Instance Reference module), next to the
  CT slices. :func:`describe_seg` reads it back as ``referenced_segs``.
* Segment numbers follow the caller's ``segments`` list: label value ``i + 1``
  is ``segments[i]``; codes and colours come from :mod:`medimg_kernel.anatomy`.
* The SegmentationType is ``BINARY`` by default (valid for every reader and for
  the 2022 ``dciodvfy``); ``LABELMAP`` (Label Map Segmentation Storage, 2024)
  is available for non-overlapping segments.
* Frames are paired with slices through the source CT instances, which are
  sorted along the volume's slice normal before highdicom sees them
  (highdicom pairs frame ``i`` with ``source_images[i]`` without checking).
  Empty frames are omitted (highdicom's default).

The public functions are here; :mod:`medimg_kernel.seg.content` checks and converts
``write_seg``'s arguments for highdicom (and defines :class:`AlgorithmIdentification`),
:mod:`medimg_kernel.seg.frames` pairs frames with slices and decodes them, and
:mod:`medimg_kernel.seg.highdicom_speedups` holds a speed-up of highdicom installed when
this module is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__
from ..anatomy import SegmentType, segment_type_from_codes
from ..collector import collector_paused
from ..errors import SegmentationError
from ..volume import Volume
from . import content, frame_groups, frames, highdicom_speedups
from .content import MODEL_PREFIX, SEG_SOP_CLASS_UIDS, AlgorithmIdentification

logger = logging.getLogger(__name__)

__all__ = ["SegInfo", "write_seg", "read_seg", "read_seg_masks", "read_seg_types", "describe_seg"]

highdicom_speedups.install()


@dataclass(frozen=True)
class SegInfo:
    """What a SEG says about itself (see :func:`describe_seg`).

    Attributes
    ----------
    type_id
        The segmentation type id (SeriesDescription without ``"model_"``).
    is_model
        Whether it is a model output (SeriesDescription starts with ``"model_"``).
    segment_names
        Catalogue names (or SegmentLabel when not in the catalogue), in
        SegmentNumber order: ``segment_names[i]`` is segment ``i + 1``.
    algorithm
        The algorithm of the first automatic segment, or ``None`` (manual).
    content_creator
        ContentCreatorName, or ``None`` when empty.
    content_datetime
        ContentDate + ContentTime (naive, local time of the writer).
    referenced_segs
        ``(SeriesInstanceUID, SOPInstanceUID)`` of SEG instances this SEG
        references, e.g. the model SEG a reviewed SEG corrects.
    source_series_instance_uids
        SeriesInstanceUIDs of the referenced image series (not SEG).
    """

    type_id: str
    is_model: bool
    segment_names: tuple[str, ...]
    algorithm: AlgorithmIdentification | None
    content_creator: str | None
    content_datetime: datetime | None
    referenced_segs: tuple[tuple[str, str], ...]
    source_series_instance_uids: tuple[str, ...]


def write_seg(
    volume: Volume,
    labels: np.ndarray,
    segments: Sequence[str | SegmentType],
    *,
    type_id: str,
    algorithm: AlgorithmIdentification | None = None,
    content_creator: str | None = None,
    series_number: int = 300,
    referenced_seg: Dataset | None = None,
    content_datetime: datetime | None = None,
    segmentation_type: str = "BINARY",
) -> Dataset:
    """Encode a label map (or overlapping masks) on ``volume``'s grid as a DICOM SEG.

    Parameters
    ----------
    volume
        The segmented series; ``volume.sources`` (the CT headers) are required.
        Their order does not matter: they are sorted along ``volume.direction[0]``
        and checked against ``volume``'s grid.
    labels
        Either an integer label map of shape ``volume.shape`` (z, y, x) where
        value ``i + 1`` is ``segments[i]`` and 0 is background, or a boolean
        array ``(len(segments), z, y, x)`` for segments that may overlap.
    segments
        Segment types: registry names (``["liver", "spleen", "kidney"]``) or
        :class:`~medimg_kernel.anatomy.SegmentType` objects with any codes (a tumour, a
        vessel, a tracked nodule: ``get_segment_type("nodule").with_tracking("nodule 1")``).
    type_id
        Segmentation type id; SeriesDescription is ``type_id`` (reviewed) or
        ``"model_" + type_id`` (when ``algorithm`` is given). ContentLabel is
        its upper-case form, truncated to 16 characters.
    algorithm
        Given for model outputs: segments become ``AUTOMATIC`` with this
        algorithm identification. ``None``: ``MANUAL`` (reviewed / ground truth).
    content_creator
        ContentCreatorName (the reviewer, DICOM PN form ``"FAMILY^GIVEN"``).
    series_number
        SeriesNumber of the new series.
    referenced_seg
        The SEG this one corrects (same study and frame of reference); recorded
        as a further source image (SourceImageSequence, ReferencedSeriesSequence).
    content_datetime
        ContentDate/ContentTime; default now (local time).
    segmentation_type
        ``"BINARY"`` (default) or ``"LABELMAP"`` (non-overlapping only; not
        known to dciodvfy builds before 2024).

    Returns
    -------
    pydicom.dataset.Dataset
        A highdicom ``Segmentation``, ready for ``save_as`` or STOW-RS.

    Raises
    ------
    SegmentationError
        Unknown or duplicate segment names, a labels shape or values that do
        not fit, a volume without sources or whose sources do not match its
        grid, an invalid ``type_id``, or an unusable ``referenced_seg``.
    """
    series_description, content_label = content.names_from_type_id(type_id, algorithm is not None)
    entries = content.segment_types(segments)
    if segmentation_type not in frames.SEGMENTATION_TYPES:
        raise SegmentationError(f"segmentation_type must be one of {frames.SEGMENTATION_TYPES}; got {segmentation_type!r}")
    with collector_paused():  # ~10^5 small objects, none of them garbage
        sources = frames.sorted_sources(volume)
        pixel_array = content.pixel_array(labels, volume.shape, len(entries), segmentation_type)
        further = [content.check_referenced_seg(referenced_seg, sources[0])] if referenced_seg is not None else None
        when = content_datetime or datetime.now()
        seg = _segmentation(sources, pixel_array, segmentation_type, entries, algorithm, series_number,
                            content_label, series_description, content_creator, further, when)
        content.drop_image_level_source_references(seg)
        frame_groups.preencode_frame_groups(seg)
    logger.debug("SEG %s: %d frames, %d segments", seg.SOPInstanceUID, seg.NumberOfFrames, len(entries))
    return seg


def _segmentation(sources: list[Dataset], pixel_array: np.ndarray, segmentation_type: str,
                  entries: list[SegmentType], algorithm: AlgorithmIdentification | None, series_number: int,
                  content_label: str, series_description: str, content_creator: str | None,
                  further: list[Dataset] | None, when: datetime) -> hd.seg.Segmentation:
    """highdicom's Segmentation with the platform's attributes (see :func:`write_seg`)."""
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=segmentation_type,
        segment_descriptions=content.descriptions(entries, algorithm),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medimg-platform",
        manufacturer_model_name="medimg_kernel",
        software_versions=f"medimg_kernel {__version__}, highdicom {hd.__version__}",
        device_serial_number="0",
        content_label=content_label,
        content_description=f"{series_description} segmentation ({', '.join(e.name for e in entries)})"[:64],
        content_creator_name=content.person_name(content_creator),
        further_source_images=further,
        series_description=series_description,
        content_date=when.date(),
        content_time=when.time(),
        series_date=when.date(),
        series_time=when.time(),
    )


def read_seg(seg: Dataset, volume: Volume) -> np.ndarray:
    """The label map of ``seg`` on ``volume``'s grid.

    Parameters
    ----------
    seg
        A SEG (BINARY or LABELMAP) of ``volume``'s series.
    volume
        The series it segments; frames are matched to slices by the referenced
        SOP Instance UIDs when ``volume.sources`` are known, otherwise by
        ImagePositionPatient, and every frame's position, orientation and pixel
        spacing are checked against ``volume``'s grid.

    Returns
    -------
    numpy.ndarray
        Shape ``volume.shape`` (z, y, x); value ``n`` is SegmentNumber ``n``
        (``describe_seg(seg).segment_names[n - 1]``), 0 background; ``uint8``
        for up to 255 segments, else ``uint16``.

    Raises
    ------
    SegmentationError
        Not a SEG, frames that reference another series or do not lie on the
        grid, or overlapping segments (use :func:`read_seg_masks`).
    """
    masks, _ = read_seg_masks(seg, volume)
    if masks.shape[0] > 1 and np.any(masks.sum(axis=0, dtype=np.uint16) > 1):
        raise SegmentationError(
            f"SEG {seg.SOPInstanceUID} has overlapping segments: a label map cannot hold them; use read_seg_masks"
        )
    dtype = np.uint8 if masks.shape[0] <= 255 else np.uint16
    labels = np.zeros(volume.shape, dtype=dtype)
    for index in range(masks.shape[0]):
        labels[masks[index]] = index + 1
    return labels


def read_seg_masks(seg: Dataset, volume: Volume) -> tuple[np.ndarray, tuple[str, ...]]:
    """One boolean mask per segment, on ``volume``'s grid (segments may overlap).

    Returns
    -------
    masks : numpy.ndarray
        Boolean, shape ``(n_segments, z, y, x)``; ``masks[i]`` is SegmentNumber ``i + 1``.
    names : tuple of str
        Catalogue name (or SegmentLabel) of each segment.

    Raises
    ------
    SegmentationError
        As :func:`read_seg`, apart from overlap.
    """
    names = _segment_names(seg)
    masks = frames.decode_segments(seg, volume, len(names))
    return masks, names


def describe_seg(seg: Dataset) -> SegInfo:
    """Read the platform's conventions back from a SEG (type id, algorithm, reviewer, references)."""
    _require_seg(seg)
    description = str(seg.get("SeriesDescription", ""))
    is_model = description.startswith(MODEL_PREFIX)
    algorithm = None
    for item in seg.SegmentSequence:
        if "SegmentationAlgorithmIdentificationSequence" in item:
            alg = item.SegmentationAlgorithmIdentificationSequence[0]
            family = alg.AlgorithmFamilyCodeSequence[0]
            algorithm = AlgorithmIdentification(
                name=str(alg.AlgorithmName), version=str(alg.AlgorithmVersion),
                family=Code(family.CodeValue, family.CodingSchemeDesignator, family.CodeMeaning),
                source=str(alg.AlgorithmSource) if "AlgorithmSource" in alg else None,
            )
            break
    referenced_segs, image_series = [], []
    for series in seg.get("ReferencedSeriesSequence", []):
        instances = series.get("ReferencedInstanceSequence", [])
        segs = [i for i in instances if i.ReferencedSOPClassUID in SEG_SOP_CLASS_UIDS]
        referenced_segs += [(str(series.SeriesInstanceUID), str(i.ReferencedSOPInstanceUID)) for i in segs]
        if len(segs) < len(instances):
            image_series.append(str(series.SeriesInstanceUID))
    creator = str(seg.get("ContentCreatorName", "") or "") or None
    return SegInfo(
        type_id=description.removeprefix(MODEL_PREFIX), is_model=is_model,
        segment_names=_segment_names(seg), algorithm=algorithm, content_creator=creator,
        content_datetime=_content_datetime(seg), referenced_segs=tuple(referenced_segs),
        source_series_instance_uids=tuple(image_series),
    )


# --- reading helpers -------------------------------------------------------------------------


def _require_seg(seg: Dataset) -> None:
    if seg.get("SOPClassUID") not in SEG_SOP_CLASS_UIDS or "SegmentSequence" not in seg:
        raise SegmentationError(f"not a Segmentation instance (SOP class {seg.get('SOPClassUID')})")


def _segment_names(seg: Dataset) -> tuple[str, ...]:
    _require_seg(seg)
    # A LABELMAP SEG may describe the background as segment 0: it is not a segment here.
    items = sorted((i for i in seg.SegmentSequence if int(i.SegmentNumber) > 0), key=lambda i: int(i.SegmentNumber))
    numbers = [int(item.SegmentNumber) for item in items]
    if numbers != list(range(1, len(items) + 1)):
        raise SegmentationError(f"SEG {seg.SOPInstanceUID}: SegmentNumbers {numbers} are not 1..{len(items)}")
    return tuple(entry.name if entry.label_value else str(item.SegmentLabel)
                 for entry, item in zip(_types_of(items), items, strict=True))


def _code(item: Dataset) -> Code:
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))


def _types_of(items: Sequence[Dataset]) -> list[SegmentType]:
    """Each SegmentSequence item as a segment type: the registry's when it knows the codes, else one
    built from them; tracking id/UID as the item has them."""
    types = []
    for item in items:
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        modifiers = prop.get("SegmentedPropertyTypeModifierCodeSequence") or []
        regions = item.get("AnatomicRegionSequence") or []
        rgb = None
        if "RecommendedDisplayCIELabValue" in item:
            rgb = tuple(int(round(c)) for c in hd.color.CIELabColor.from_dicom_value(
                [int(v) for v in item.RecommendedDisplayCIELabValue]).to_rgb())
        entry = segment_type_from_codes(
            _code(item.SegmentedPropertyCategoryCodeSequence[0]), _code(prop), _code(modifiers[0]) if modifiers else None,
            label=str(item.get("SegmentLabel", "")), rgb=rgb,  # type: ignore[arg-type]
            anatomic_region=_code(regions[0]) if regions else None)
        if "TrackingID" in item or "TrackingUID" in item:
            entry = replace(entry, tracking_id=str(item.get("TrackingID", "")) or None,
                            tracking_uid=str(item.get("TrackingUID", "")) or None)
        types.append(entry)
    return types


def read_seg_types(seg: Dataset) -> tuple[SegmentType, ...]:
    """The segment types of a SEG in SegmentNumber order, codes preserved: the registry's entry
    where it knows the codes, otherwise a type built from the SEG's own codes, label and colour
    (label value 0), so a SEG from another tool keeps what it says."""
    _require_seg(seg)
    items = sorted((i for i in seg.SegmentSequence if int(i.SegmentNumber) > 0), key=lambda i: int(i.SegmentNumber))
    return tuple(_types_of(items))


def _content_datetime(seg: Dataset) -> datetime | None:
    date, time = str(seg.get("ContentDate", "")), str(seg.get("ContentTime", ""))
    if not date:
        return None
    try:
        return datetime.strptime(date + (time.split(".")[0] or "000000").ljust(6, "0"), "%Y%m%d%H%M%S").replace(
            microsecond=int((time.split(".") + [""])[1].ljust(6, "0")[:6] or 0)
        )
    except ValueError:
        logger.warning("SEG %s: unreadable ContentDate/ContentTime", seg.get("SOPInstanceUID"))
        return None
