"""What :func:`medimg_kernel.seg.sop.write_seg` hands to highdicom's ``Segmentation``.

:class:`AlgorithmIdentification` (the algorithm of a model output) is defined here, where
both the segment descriptions and :mod:`.sop` (which reads it back) import it. Each helper checks one of the caller's arguments and turns it into the form highdicom
takes: the SeriesDescription and ContentLabel from the type id (``MODEL_PREFIX`` for
model outputs), segment descriptions from the anatomy catalogue, the pixel array, the
content creator's person name and the referenced SEG; one trims the finished SEG's
SourceImageSequence. Invalid arguments raise :class:`~medimg_kernel.errors.SegmentationError`
naming the argument.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..anatomy import SegmentType, get_segment_type
from ..errors import SegmentationError

__all__ = [
    "AlgorithmIdentification", "MODEL_PREFIX", "SEG_SOP_CLASS_UIDS", "names_from_type_id", "segment_types",
    "pixel_array", "descriptions", "drop_image_level_source_references", "person_name", "check_referenced_seg",
]

#: Prefix of the SeriesDescription of model outputs (DESIGN.md §4).
MODEL_PREFIX = "model_"
_TYPE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,57}")
#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASS_UIDS = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})


@dataclass(frozen=True)
class AlgorithmIdentification:
    """The algorithm that produced a segmentation (SegmentationAlgorithmIdentificationSequence).

    Parameters
    ----------
    name
        AlgorithmName, e.g. the registered model name (``"liver-unet"``).
    version
        AlgorithmVersion, e.g. the model registry version (``"3"``).
    family
        AlgorithmFamilyCodeSequence item (CID 7162); default DCM 123110
        "Artificial Intelligence".
    source
        AlgorithmSource (who made it), optional.
    """

    name: str
    version: str
    family: Code = codes.DCM.ArtificialIntelligence
    source: str | None = None

    def __post_init__(self) -> None:
        for field_name in ("name", "version"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip() or len(value) > 64 or "\\" in value:
                raise SegmentationError(
                    f"AlgorithmIdentification.{field_name} must be a non-empty LO value "
                    f"(at most 64 characters, no backslash); got {value!r}"
                )

    def to_sequence(self) -> hd.AlgorithmIdentificationSequence:
        """As highdicom's AlgorithmIdentificationSequence."""
        return hd.AlgorithmIdentificationSequence(
            name=self.name, family=self.family, version=self.version, source=self.source
        )


def names_from_type_id(type_id: str, is_model: bool) -> tuple[str, str]:
    """(SeriesDescription, ContentLabel) for ``type_id``.

    Parameters
    ----------
    type_id
        The segmentation type id, without ``MODEL_PREFIX``.
    is_model
        Whether the SEG is a model output (SeriesDescription gets ``MODEL_PREFIX``).

    Raises
    ------
    SegmentationError
        ``type_id`` is not 1-58 letters, digits, ``_``, ``.`` or ``-``, or starts with ``MODEL_PREFIX``.
    """
    if not isinstance(type_id, str) or not _TYPE_ID.fullmatch(type_id):
        raise SegmentationError(
            f"type_id must be 1-58 letters, digits, '_', '.' or '-' starting with a letter or digit; got {type_id!r}"
        )
    if type_id.startswith(MODEL_PREFIX):
        raise SegmentationError(
            f"type_id {type_id!r} starts with {MODEL_PREFIX!r}: pass the bare type id; "
            "the prefix is added when an algorithm is given"
        )
    description = MODEL_PREFIX + type_id if is_model else type_id
    content_label = re.sub(r"[^A-Z0-9_ ]", "_", description.upper())[:16]
    return description, content_label


def segment_types(segments: Sequence[str | SegmentType]) -> list[SegmentType]:
    """The segment types of ``segments`` (registry names or :class:`SegmentType` objects), in order.

    Raises
    ------
    SegmentationError
        ``segments`` is empty, a plain string, or lists a segment twice (the same type without
        distinct tracking ids: tracked findings, e.g. two nodules, may share a type).
    UnknownSegmentTypeError
        A name is not in the segment type registry.
    """
    if isinstance(segments, (str, SegmentType)) or len(segments) == 0:
        raise SegmentationError(f"segments must be a non-empty list of segment types or registry names; got {segments!r}")
    entries = [get_segment_type(name) for name in segments]
    keys = [(e.name, e.tracking_id) for e in entries]
    duplicates = sorted({k[0] for k in keys if keys.count(k) > 1})
    if duplicates:
        raise SegmentationError(f"segments lists {', '.join(duplicates)} more than once; each segment once "
                                "(give tracked findings distinct tracking ids: SegmentType.with_tracking)")
    return entries


def pixel_array(labels: np.ndarray, shape: tuple[int, int, int], n: int, segmentation_type: str) -> np.ndarray:
    """Check ``labels`` and return the array highdicom expects (label map or z, y, x, segment stack).

    Parameters
    ----------
    labels
        An integer label map of shape ``shape`` or a boolean stack ``(n, *shape)``.
    shape
        The volume's ``(z, y, x)``.
    n
        The number of segments.
    segmentation_type
        ``"BINARY"`` or ``"LABELMAP"``.

    Raises
    ------
    SegmentationError
        A shape, dtype or values that do not fit, or overlapping masks for ``LABELMAP``.
    """
    labels = np.asarray(labels)
    if labels.ndim == 4:
        if labels.shape != (n, *shape):
            raise SegmentationError(
                f"mask stack shape {labels.shape} must be (len(segments), z, y, x) = {(n, *shape)}"
            )
        if labels.dtype != bool:
            raise SegmentationError(f"a 4-D mask stack must be boolean; got dtype {labels.dtype}")
        if segmentation_type == "LABELMAP" and np.any(labels.sum(axis=0, dtype=np.uint16) > 1):
            raise SegmentationError("segments overlap: LABELMAP cannot hold overlapping segments; use BINARY")
        return np.moveaxis(labels, 0, -1).view(np.uint8)
    if labels.shape != shape:
        raise SegmentationError(f"labels shape {labels.shape} differs from the volume's (z, y, x) {shape}")
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise SegmentationError(f"labels must be an integer label map (or bool masks); got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > n:
        raise SegmentationError(
            f"labels hold values {low}..{high} but only 0 (background) and 1..{n} have a segment; "
            f"segments = {n} names"
        )
    return labels.astype(np.uint8 if n <= 255 else np.uint16, copy=False)


def descriptions(entries: list[SegmentType], algorithm: AlgorithmIdentification | None) -> list[hd.seg.SegmentDescription]:
    """highdicom segment descriptions: numbers 1.., the types' codes, regions, tracking and colours,
    MANUAL or AUTOMATIC."""
    descriptions = []
    for number, entry in enumerate(entries, start=1):
        region = None
        if entry.anatomic_region is not None:
            region = hd.sr.CodedConcept.from_code(entry.anatomic_region)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=entry.name if not entry.tracking_id else f"{entry.name} {entry.tracking_id}"[:64],
            segmented_property_category=entry.property_category,
            segmented_property_type=entry.property_type,
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=algorithm.to_sequence() if algorithm is not None else None,
            tracking_id=entry.tracking_id, tracking_uid=entry.tracking_uid,
            anatomic_regions=[region] if region is not None else None,
            display_color=hd.color.CIELabColor.from_rgb(*entry.rgb),
        )
        if region is not None and entry.anatomic_region_modifier is not None:
            description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
                hd.sr.CodedConcept.from_code(entry.anatomic_region_modifier)
            ]
        if entry.property_type_modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept.from_code(entry.property_type_modifier)
            ]
        descriptions.append(description)
    return descriptions


def drop_image_level_source_references(seg: Dataset) -> None:
    """Keep only SEG items in the top-level SourceImageSequence (General Reference module, type U).

    Each frame references its CT slice in DerivationImageSequence and every CT
    instance is listed in ReferencedSeriesSequence, so the 1-per-slice
    top-level list is redundant (dcmqi does not write it) and costs ~15 % of
    ``save_as``. The referenced model SEG (no per-frame reference) stays.
    """
    kept = [item for item in seg.get("SourceImageSequence", []) if item.ReferencedSOPClassUID in SEG_SOP_CLASS_UIDS]
    if kept:
        seg.SourceImageSequence = kept
    elif "SourceImageSequence" in seg:
        del seg.SourceImageSequence


def person_name(name: str | None) -> str | None:
    """``name`` checked as a DICOM PN value (ContentCreatorName); ``None`` stays ``None``.

    Raises
    ------
    SegmentationError
        Empty, longer than 64 characters, or with a backslash or control characters.
    """
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip() or len(name) > 64 or re.search(r"[\\\x00-\x1f]", name):
        raise SegmentationError(
            "content_creator must be a DICOM person name such as 'FAMILY^GIVEN' "
            "(at most 64 characters, no backslash or control characters)"
        )
    return name


def check_referenced_seg(referenced: Dataset, source: Dataset) -> Dataset:
    """``referenced`` when it is a SEG in the study and frame of reference of ``source``.

    Raises
    ------
    SegmentationError
        Not a SEG, another study or another frame of reference.
    """
    if referenced.get("SOPClassUID") not in SEG_SOP_CLASS_UIDS:
        raise SegmentationError(f"referenced_seg must be a SEG instance; got SOP class {referenced.get('SOPClassUID')}")
    if referenced.get("StudyInstanceUID") != source.StudyInstanceUID:
        raise SegmentationError(
            f"referenced_seg {referenced.SOPInstanceUID} belongs to another study than the volume's sources"
        )
    if referenced.get("FrameOfReferenceUID") != source.FrameOfReferenceUID:
        raise SegmentationError(
            f"referenced_seg {referenced.SOPInstanceUID} is in another frame of reference than the volume"
        )
    return referenced
