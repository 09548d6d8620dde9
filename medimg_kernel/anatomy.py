"""The registry of segment types: how each structure or finding is coded in DICOM SEG and TID 1500.

A :class:`SegmentType` is a coded concept, not a name: SegmentedPropertyCategoryCodeSequence
(CID 7150), SegmentedPropertyTypeCodeSequence (CID 7151 / 7166 / 4031, SNOMED CT) with an optional
modifier (laterality), an optional anatomic region (where a finding sits, CID 4031) and a
recommended display colour. Segments are written and read by these codes
(:func:`medimg_kernel.seg.write_seg` takes names *or* :class:`SegmentType` objects; a SEG from
another tool reads with its codes preserved, :func:`segment_type_from_codes`).

The registry (:data:`CATALOGUE`) is seeded with common anatomy (category SCT 91723000
"Anatomical Structure"; "Organ" 91772007 is not in CID 7150, so organs are coded as anatomical
structures, as dcmqi and 3D Slicer do) and the usual findings (category SCT 49755003
"Morphologically Abnormal Structure": neoplasm, nodule, mass, metastasis, lesion, cyst). It is
extended by code (:func:`register_segment_type`) and by settings: a TOML file of
``[[segment_types]]`` tables (:func:`load_segment_types`), loaded on first use from the file
named by ``MEDIMG_SEGMENT_TYPES`` when set.

* ``label_value``: the platform-wide label value a model emits for the structure (a model's
  output channel / label map value). In a SEG written by :func:`medimg_kernel.seg.write_seg` the
  SegmentNumber is the position in the caller's ``segments`` list plus one, not this value.
* ``rgb``: the recommended display colour (sRGB, 0–255), written as
  RecommendedDisplayCIELabValue; distinct for every seeded entry.

Codes are taken from pydicom's code dictionary (``codes.SCT``), so their values and meanings are
the DICOM standard's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .errors import SegmentationError, UnknownSegmentTypeError

#: Category of every catalogue entry: SCT 91723000 "Anatomical Structure" (CID 7150).
ANATOMICAL_STRUCTURE: Code = codes.SCT.AnatomicalStructure


@dataclass(frozen=True)
class SegmentType:
    """How one structure or finding is coded in a SEG segment (and a TID 1500 measurement group).

    Parameters
    ----------
    name
        Registry key, lower case (``"liver"``, ``"nodule"``); also the SegmentLabel.
    label_value
        Platform-wide label value models use for this structure (1–65535); 0 for a type read
        from another tool's SEG that is not in the registry.
    property_category
        SegmentedPropertyCategoryCodeSequence item (CID 7150).
    property_type
        SegmentedPropertyTypeCodeSequence item (SNOMED CT).
    property_type_modifier
        SegmentedPropertyTypeModifierCodeSequence item (e.g. laterality), or ``None``.
    rgb
        Recommended display colour as sRGB ``(r, g, b)``, each 0–255.
    anatomic_region
        AnatomicRegionSequence item: where a finding lies (e.g. Liver for a liver lesion), or ``None``.
    anatomic_region_modifier
        Its AnatomicRegionModifierSequence item (e.g. Left), or ``None``.
    tracking_id, tracking_uid
        TrackingID / TrackingUID of a tracked finding (the same lesion across SEGs), or ``None``.
    """

    name: str
    label_value: int
    property_category: Code
    property_type: Code
    property_type_modifier: Code | None
    rgb: tuple[int, int, int]
    anatomic_region: Code | None = None
    anatomic_region_modifier: Code | None = None
    tracking_id: str | None = None
    tracking_uid: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise SegmentationError(f"segment type name {self.name!r} must be 1-64 lower-case letters, digits, "
                                    "'-', '_' or ' ', starting with a letter or digit")
        if not isinstance(self.label_value, int) or not 0 <= self.label_value <= 65535:
            raise SegmentationError(f"segment type {self.name!r}: label_value {self.label_value!r} is not 0..65535")
        if len(self.rgb) != 3 or any(not isinstance(c, int) or not 0 <= c <= 255 for c in self.rgb):
            raise SegmentationError(f"segment type {self.name!r}: rgb {self.rgb!r} is not three integers 0..255")
        for field_name in ("property_category", "property_type"):
            if not isinstance(getattr(self, field_name), Code):
                raise SegmentationError(f"segment type {self.name!r}: {field_name} must be a coded concept "
                                        "(pydicom Code: value, scheme designator, meaning)")

    def with_tracking(self, tracking_id: str, tracking_uid: str | None = None) -> SegmentType:
        """This type for one tracked finding (e.g. ``nodule.with_tracking("nodule 1")``)."""
        from pydicom.uid import generate_uid

        return replace(self, tracking_id=tracking_id, tracking_uid=tracking_uid or generate_uid())


_NAME = re.compile(r"[a-z0-9][a-z0-9 _-]{0,63}")

#: Category of findings: SCT 49755003 "Morphologically Abnormal Structure" (CID 7150).
ABNORMAL_STRUCTURE: Code = codes.SCT.MorphologicallyAbnormalStructure


def _anatomy(name: str, value: int, code: Code, rgb: tuple[int, int, int], modifier: Code | None = None) -> SegmentType:
    return SegmentType(name, value, ANATOMICAL_STRUCTURE, code, modifier, rgb)


def _finding(name: str, value: int, code: Code, rgb: tuple[int, int, int]) -> SegmentType:
    return SegmentType(name, value, ABNORMAL_STRUCTURE, code, None, rgb)


#: The seeded registry, by name. Label values 1-3 are the organ model's outputs; colours are
#: distinct (every pair more than 10 CIELAB ΔE apart; liver and spleen are 3D Slicer's).
CATALOGUE: dict[str, SegmentType] = {
    entry.name: entry
    for entry in (
        _anatomy("liver", 1, codes.SCT.Liver, (221, 130, 101)),
        _anatomy("spleen", 2, codes.SCT.Spleen, (157, 108, 162)),
        # Both kidneys as one segment: Kidney with the laterality modifier "Right and left".
        _anatomy("kidney", 3, codes.SCT.Kidney, (66, 160, 200), codes.SCT.RightAndLeft),
        _anatomy("kidney left", 4, codes.SCT.Kidney, (30, 90, 150), codes.SCT.Left),
        _anatomy("kidney right", 5, codes.SCT.Kidney, (40, 125, 170), codes.SCT.Right),
        _anatomy("pancreas", 6, codes.SCT.Pancreas, (249, 180, 111)),
        _anatomy("lung", 7, codes.SCT.Lung, (197, 165, 145), codes.SCT.RightAndLeft),
        _anatomy("heart", 8, codes.SCT.Heart, (180, 30, 60)),
        _anatomy("aorta", 9, codes.SCT.Aorta, (224, 97, 76)),
        _anatomy("gallbladder", 10, codes.SCT.Gallbladder, (139, 150, 98)),
        _anatomy("stomach", 11, codes.SCT.Stomach, (255, 60, 60)),
        _anatomy("urinary bladder", 12, codes.SCT.UrinaryBladderStructure, (222, 154, 132)),
        _anatomy("vessel", 13, codes.SCT.BloodVessel, (200, 0, 0)),
        _anatomy("bone", 14, codes.SCT.Bone, (241, 214, 145)),
        _finding("neoplasm", 20, codes.SCT.Neoplasm, (255, 0, 255)),
        _finding("nodule", 21, codes.SCT.Nodule, (255, 215, 0)),
        _finding("mass", 22, codes.SCT.Mass, (0, 255, 127)),
        _finding("metastasis", 23, codes.SCT.NeoplasmMetastatic, (255, 69, 0)),
        _finding("lesion", 24, codes.SCT.Lesion, (0, 206, 209)),
        _finding("cyst", 25, codes.SCT.Cyst, (135, 206, 250)),
    )
}
_settings_loaded = False


def register_segment_type(entry: SegmentType, *, replace: bool = False) -> SegmentType:
    """Add ``entry`` to the registry (``replace`` an entry of the same name).

    Raises
    ------
    SegmentationError
        The name, or the label value or codes of another entry, is taken (and ``replace`` is false).
    """
    _load_settings_once()
    existing = CATALOGUE.get(entry.name)
    if existing is not None and not replace:
        raise SegmentationError(f"segment type {entry.name!r} is registered already (pass replace=True to redefine it)")
    for other in CATALOGUE.values():
        if other.name == entry.name:
            continue
        if entry.label_value and other.label_value == entry.label_value:
            raise SegmentationError(f"segment type {entry.name!r}: label value {entry.label_value} is {other.name!r}'s")
        if _same_codes(other, entry):
            raise SegmentationError(f"segment type {entry.name!r} has the codes of {other.name!r}")
    CATALOGUE[entry.name] = entry
    return entry


def _code(text: str, where: str) -> Code:
    """``"SCHEME:VALUE:Meaning"`` (e.g. ``"SCT:27925004:Nodule"``) as a Code."""
    parts = str(text).split(":", 2)
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise SegmentationError(f"{where}: {text!r} is not SCHEME:VALUE:Meaning (e.g. SCT:27925004:Nodule)")
    scheme, value, meaning = (p.strip() for p in parts)
    return Code(value, scheme, meaning)


def load_segment_types(path: str | Path) -> list[SegmentType]:
    """Register the ``[[segment_types]]`` tables of a TOML file; returns them.

    Each table: ``name``, ``label_value``, ``category`` (default Anatomical Structure), ``type``,
    optional ``modifier``, ``region``, ``region_modifier`` (codes as ``"SCHEME:VALUE:Meaning"``)
    and ``rgb`` (three integers). Entries of the same name replace the seeded ones.

    Raises
    ------
    SegmentationError
        A table is malformed (named by its position and name); nothing of the file is registered then.
    """
    import tomllib

    try:
        tables = tomllib.loads(Path(path).read_text()).get("segment_types", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SegmentationError(f"segment types file {path}: {exc}") from exc
    entries = []
    for i, table in enumerate(tables, start=1):
        where = f"{path}: [[segment_types]] number {i} ({table.get('name', '?')})"
        try:
            entries.append(SegmentType(
                name=str(table["name"]).strip().lower(), label_value=int(table.get("label_value", 0)),
                property_category=_code(table.get("category", "SCT:91723000:Anatomical Structure"), where),
                property_type=_code(table["type"], where),
                property_type_modifier=_code(table["modifier"], where) if "modifier" in table else None,
                rgb=tuple(int(c) for c in table.get("rgb", (128, 128, 128))),  # type: ignore[arg-type]
                anatomic_region=_code(table["region"], where) if "region" in table else None,
                anatomic_region_modifier=_code(table["region_modifier"], where) if "region_modifier" in table else None,
            ))
        except KeyError as exc:
            raise SegmentationError(f"{where}: missing key {exc.args[0]!r}") from None
        except SegmentationError as exc:
            raise SegmentationError(f"{where}: {exc}") from None
    for entry in entries:
        register_segment_type(entry, replace=True)
    return entries


def _load_settings_once() -> None:
    global _settings_loaded
    if _settings_loaded:
        return
    _settings_loaded = True
    path = os.environ.get(SETTINGS_ENV)
    if path:
        load_segment_types(path)


#: Environment variable naming a TOML file of ``[[segment_types]]`` loaded on first use.
SETTINGS_ENV = "MEDIMG_SEGMENT_TYPES"


def segment_type_from_codes(category: Code, property_type: Code, modifier: Code | None = None, *,
                            label: str = "", rgb: tuple[int, int, int] | None = None,
                            anatomic_region: Code | None = None) -> SegmentType:
    """The registry's entry with these codes (with the SEG's own colour and anatomic region, when it
    has them), or a type built from them (label value 0) for codes the registry does not know: a
    SEG written by another tool keeps what it says either way."""
    found = find_segment_type(category, property_type, modifier)
    if found is not None:
        return replace(found, rgb=rgb or found.rgb, anatomic_region=anatomic_region or found.anatomic_region)
    name = re.sub(r"[^a-z0-9 _-]", "-", (label or property_type.meaning).strip().lower())[:64] or "segment"
    if not name[0].isalnum():
        name = "segment " + name[:56]
    return SegmentType(name, 0, category, property_type, modifier, rgb or (128, 128, 128), anatomic_region)


def get_segment_type(name: str | SegmentType) -> SegmentType:
    """The registry entry called ``name`` (case-insensitive); a :class:`SegmentType` is returned as is.

    Raises
    ------
    UnknownSegmentTypeError
        When the registry has no such entry; the message lists the known names.
    """
    if isinstance(name, SegmentType):
        return name
    _load_settings_once()
    entry = CATALOGUE.get(name.strip().lower()) if isinstance(name, str) else None
    if entry is None:
        raise UnknownSegmentTypeError(str(name), sorted(CATALOGUE))
    return entry


def find_segment_type(category: Code, property_type: Code, modifier: Code | None = None) -> SegmentType | None:
    """The registry entry with these codes (compared by value and scheme), or ``None``.

    ``modifier`` ``None`` matches an entry whatever its modifier (the first registered: "kidney"
    before "kidney left"); given, it must match the entry's.
    """
    _load_settings_once()
    for entry in CATALOGUE.values():
        if _same_code(entry.property_category, category) and _same_code(entry.property_type, property_type) and (
                modifier is None or (entry.property_type_modifier is not None
                                     and _same_code(entry.property_type_modifier, modifier))):
            return entry
    return None


def _same_codes(a: SegmentType, b: SegmentType) -> bool:
    return (_same_code(a.property_category, b.property_category) and _same_code(a.property_type, b.property_type)
            and (a.property_type_modifier is None) == (b.property_type_modifier is None)
            and (a.property_type_modifier is None or _same_code(a.property_type_modifier, b.property_type_modifier)))


def _same_code(a: Code, b: Code) -> bool:
    return a.value == b.value and a.scheme_designator == b.scheme_designator


__all__ = ["ABNORMAL_STRUCTURE", "ANATOMICAL_STRUCTURE", "CATALOGUE", "SETTINGS_ENV", "SegmentType",
           "find_segment_type", "get_segment_type", "load_segment_types", "register_segment_type",
           "segment_type_from_codes"]
