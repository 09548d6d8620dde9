"""Catalogue of the segment types the platform writes into DICOM SEG.

Each entry fixes how one structure is coded in a Segmentation (SEG) instance
and in TID 1500 measurement reports:

* ``label_value``: the platform-wide label value a model emits for the
  structure (a model's output channel / label map value). In a SEG written by
  :func:`medimg_kernel.seg.write_seg` the SegmentNumber is the
  position in the caller's ``segments`` list plus one, not this value.
* SegmentedPropertyCategoryCodeSequence: SCT 91723000 "Anatomical Structure"
  (CID 7150 "Segmentation Property Categories"; "Organ" 91772007 is not in
  that context group, so organs are coded as anatomical structures, as
  dcmqi and 3D Slicer do).
* SegmentedPropertyTypeCodeSequence: the SNOMED CT concept of the structure
  (CID 7166 / CID 4031), optionally with a modifier (e.g. laterality
  "Right and left" for both kidneys as one segment).
* ``rgb``: a recommended display colour (sRGB, 0–255), written as
  RecommendedDisplayCIELabValue.

Codes are taken from pydicom's code dictionary (``codes.SCT``), so their
values and meanings are the DICOM standard's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .errors import UnknownSegmentTypeError

#: Category of every catalogue entry: SCT 91723000 "Anatomical Structure" (CID 7150).
ANATOMICAL_STRUCTURE: Code = codes.SCT.AnatomicalStructure


@dataclass(frozen=True)
class SegmentType:
    """How one structure is coded in a SEG segment.

    Parameters
    ----------
    name
        Catalogue key, lower case (``"liver"``); also the SegmentLabel.
    label_value
        Platform-wide label value models use for this structure (1–255).
    property_category
        SegmentedPropertyCategoryCodeSequence item (CID 7150).
    property_type
        SegmentedPropertyTypeCodeSequence item (SNOMED CT).
    property_type_modifier
        SegmentedPropertyTypeModifierCodeSequence item, or ``None``.
    rgb
        Recommended display colour as sRGB ``(r, g, b)``, each 0–255.
    """

    name: str
    label_value: int
    property_category: Code
    property_type: Code
    property_type_modifier: Code | None
    rgb: tuple[int, int, int]


CATALOGUE: dict[str, SegmentType] = {
    entry.name: entry
    for entry in (
        SegmentType("liver", 1, ANATOMICAL_STRUCTURE, codes.SCT.Liver, None, (221, 130, 101)),
        SegmentType("spleen", 2, ANATOMICAL_STRUCTURE, codes.SCT.Spleen, None, (157, 108, 162)),
        # Both kidneys as one segment: Kidney with the laterality modifier "Right and left".
        SegmentType("kidney", 3, ANATOMICAL_STRUCTURE, codes.SCT.Kidney, codes.SCT.RightAndLeft, (185, 102, 83)),
    )
}


def get_segment_type(name: str) -> SegmentType:
    """The catalogue entry called ``name`` (case-insensitive).

    Raises
    ------
    UnknownSegmentTypeError
        When the catalogue has no such entry; the message lists the known names.
    """
    entry = CATALOGUE.get(name.strip().lower()) if isinstance(name, str) else None
    if entry is None:
        raise UnknownSegmentTypeError(str(name), sorted(CATALOGUE))
    return entry


def find_segment_type(category: Code, property_type: Code) -> SegmentType | None:
    """The catalogue entry with these codes (compared by value and scheme), or ``None``."""
    for entry in CATALOGUE.values():
        if _same_code(entry.property_category, category) and _same_code(entry.property_type, property_type):
            return entry
    return None


def _same_code(a: Code, b: Code) -> bool:
    return a.value == b.value and a.scheme_designator == b.scheme_designator
