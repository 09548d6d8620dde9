"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

:func:`deidentify` applies the profile's action codes (PS3.15 Table E.1-1) to the
attributes of that table present in a dataset, at any depth of sequences.

**The table is the standard's, as a maintained library ships it.** The 652 attributes (and 3
repeating-group masks: curves, overlays) of Table E.1-1, 2026c edition, come from
dicom-anonymizer's ``dicomfields_2026c`` (KitwareMedical, generated from the standard's own
pages). Our earlier hand-written table had 89 of them; the ones it lacked included person names
such as ScheduledPerformingPhysicianName, which it kept. Its engine is not used: it draws new
UIDs at random per run (no keyed, repeatable mapping across pulls and exports), has no
pseudonym, no date-shift option and records no method codes; ours does those:

* ``D`` replace with a dummy value of the attribute's VR; ``Z`` replace with an empty value
  (``PatientID`` gets a keyed pseudonym, a permitted "dummy" value, so a dataset keeps its
  subjects apart); ``X`` remove; ``U`` replace the UID by a new one, the **same new UID for the
  same original everywhere** (a keyed hash: consistent across files and exports with one key);
* compound codes resolve to the most conservative choice that keeps the object valid:
  ``X/Z/D``, ``X/D``, ``Z/D`` → ``D``; ``X/Z`` → ``Z``;
* every UID (VR ``UI``) that is not a class, transfer syntax or coding-scheme UID is
  treated as ``U`` (the table's U list plus any other instance UID);
* private attributes are removed (no Retain Safe Private option).

Options, recorded in DeidentificationMethodCodeSequence after 113100 (CID 7050):

* **113107 Retain Longitudinal Temporal Information Modified Dates** (default on): DA and DT
  values are shifted by a per-patient whole number of days (keyed hash of PatientID, 1–3650
  days back) instead of being removed; times are kept; LongitudinalTemporalInformationModified
  becomes ``MODIFIED``. Off: dates follow their action codes.
* **113105 Clean Descriptors Option** (when ``safe_descriptors`` is given): descriptions whose
  whole value is in that list (e.g. the platform's segmentation type ids, which are not free
  text) are kept; others are removed as in the basic profile.

:func:`find_identifying` is the checker: it lists what in a dataset is not de-identified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence

logger = logging.getLogger(__name__)

def _table_e11() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Table E.1-1 as ``({tag: action}, ((group, element, group mask, element mask, action), ...))``."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    groups = {"D": table.D_TAGS, "Z": table.Z_TAGS, "X": table.X_TAGS, "U": table.U_TAGS, "Z/D": table.Z_D_TAGS,
              "X/Z": table.X_Z_TAGS, "X/D": table.X_D_TAGS, "X/Z/D": table.X_Z_D_TAGS,
              "X/Z/U*": table.X_Z_U_STAR_TAGS}
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for action, tags in groups.items():
        for tag in tags:
            if len(tag) == 2:
                exact[(tag[0] << 16) | tag[1]] = action
            else:
                masked.append((*tag, action))
    return exact, tuple(masked)


#: PS3.15 Table E.1-1 (2026c): tag → action code; masked entries (repeating groups) apart.
TABLE_E11, MASKED_E11 = _table_e11()
#: The same by keyword (attributes pydicom names), for reading and tests.
ACTIONS: dict[str, str] = {kw: action for tag, action in TABLE_E11.items() if (kw := keyword_for_tag(tag))}


def action_for(tag: int) -> str:
    """Table E.1-1's action code for ``tag`` (``"K"``: not in the table, kept)."""
    found = TABLE_E11.get(int(tag))
    if found is not None:
        return found
    group, element = int(tag) >> 16, int(tag) & 0xFFFF
    for g, e, g_mask, e_mask, action in MASKED_E11:
        if group & g_mask == g and element & e_mask == e:
            return action
    return "K"


#: Descriptions the Clean Descriptors option may keep when their value is known to be safe.
DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ProtocolName", "DerivationDescription", "ImageComments")

#: UIDs that name a class, syntax or scheme, never an instance: kept.
_KEEP_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
              "ImplementationClassUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID",
              "ReferencedSOPClassUIDInFile", "PrivateInformationCreatorUID", "SOPClassesInStudy",
              "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID", "CodingSchemeUIDs"}

_DUMMY = {"PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "CS": "ANONYMIZED", "LT": "ANONYMIZED",
          "ST": "ANONYMIZED", "UT": "ANONYMIZED", "DA": "19000101", "TM": "000000.00", "DT": "19000101000000",
          "IS": "0", "DS": "0", "AS": "000Y", "UI": "2.25.0"}

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
RETAIN_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
PSEUDONYM = re.compile(r"^ANON-[0-9a-f]{12}$")
#: Never shifted by the modified-dates option: emptied or removed as the basic profile says.
_NEVER_SHIFTED = {"PatientBirthDate", "PatientBirthTime", "LastMenstrualDate"}


@dataclass(frozen=True)
class DeidentificationOptions:
    """How :func:`deidentify` works.

    Parameters
    ----------
    key
        Secret key of the keyed hashes (UIDs, pseudonyms, date shifts). The same key maps the
        same originals to the same replacements; keep it secret, and per dataset or export.
    shift_dates
        The Retain Longitudinal Temporal Information Modified Dates option (113107).
    safe_descriptors
        Exact description values that may be kept (Clean Descriptors option, 113105); empty: off.
    """

    key: bytes
    shift_dates: bool = True
    safe_descriptors: Collection[str] = ()

    def digest(self, *parts: str) -> bytes:
        return hmac.new(self.key, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The consistent replacement of ``uid`` (``2.25.`` + a 128-bit keyed hash)."""
        return "2.25." + str(int.from_bytes(self.digest("uid", uid)[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        return "ANON-" + self.digest("patient", patient_id).hex()[:12]

    def day_shift(self, patient_id: str) -> int:
        return 1 + int.from_bytes(self.digest("shift", patient_id)[:4], "big") % 3650


def _resolve(action: str) -> str:
    """The one action applied for a (compound) action code: D where allowed (the object stays
    valid), else Z; ``X/Z/U*`` (a reference sequence) is kept, its UIDs remapped like every UID."""
    if "U*" in action:
        return "K"
    if "/" not in action:
        return action
    return "D" if "D" in action else "Z"


def _shift_date(value: str, days: int) -> str:
    try:
        return (dt.datetime.strptime(value[:8], "%Y%m%d") - dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]
    except ValueError:
        return ""


def _apply(element: DataElement, action: str, options: DeidentificationOptions, days: int) -> str:
    """New state of ``element``: ``"remove"`` or ``"keep"`` (value changed in place)."""
    keyword = element.keyword
    if keyword == "PatientID":  # a keyed pseudonym: a permitted dummy that keeps subjects apart
        element.value = options.pseudonym(str(element.value)) if element.value else None
        return "keep"
    if keyword in DESCRIPTORS and str(element.value or "") in options.safe_descriptors:
        return "keep"
    if options.shift_dates and keyword not in _NEVER_SHIFTED:
        if element.VR in ("DA", "DT"):
            if element.value:
                element.value = _shift_date(str(element.value), days)
            return "keep"
        if element.VR == "TM":  # times of day are kept: with shifted dates they keep intervals
            return "keep"
    if action == "X":
        return "remove"
    if element.VR == "SQ":
        if action == "Z":
            element.value = DicomSequence()
        return "keep" if action in ("Z", "D") and keyword == "PersonIdentificationCodeSequence" else (
            "keep" if action == "Z" else "remove")
    if action == "Z":
        element.value = None
    elif action == "D":
        element.value = _DUMMY.get(element.VR, "")
    elif action == "U":
        element.value = options.new_uid(str(element.value))
    return "keep"


def _walk(ds: Dataset, options: DeidentificationOptions, days: int) -> None:
    for element in list(ds):
        if element.tag.is_private:
            del ds[element.tag]
            continue
        keyword = element.keyword
        if element.VR == "UI" and keyword not in _KEEP_UIDS and element.value:
            values = element.value if element.VM > 1 else [element.value]
            new = [options.new_uid(str(v)) for v in values]
            element.value = new if element.VM > 1 else new[0]
            continue
        action = _resolve(action_for(element.tag))
        if action != "K":
            if _apply(element, action, options, days) == "remove":
                del ds[element.tag]
                continue
        if element.VR == "SQ" and element.tag in ds:
            for item in element.value:
                _walk(item, options, days)


def _method_code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def deidentify(ds: Dataset, options: DeidentificationOptions) -> Dataset:
    """De-identify ``ds`` in place (and return it) by the Basic Profile and the chosen options."""
    days = options.day_shift(str(ds.get("PatientID", "")))
    _walk(ds, options, days)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "SOPInstanceUID" in ds:
        file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    codes = [BASIC_PROFILE]
    if options.shift_dates:
        codes.append(RETAIN_MODIFIED_DATES)
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    if options.safe_descriptors:
        codes.append(CLEAN_DESCRIPTORS)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "; ".join(meaning for _, meaning in codes)[:64]
    ds.DeidentificationMethodCodeSequence = DicomSequence([_method_code(v, m) for v, m in codes])
    return ds


def find_identifying(ds: Dataset, *, safe_descriptors: Collection[str] = (), _path: str = "",
                     _shifted: bool | None = None) -> list[str]:
    """What in ``ds`` is not de-identified by :func:`deidentify`'s rules (empty list: nothing).

    Flags: a missing ``PatientIdentityRemoved=YES`` or 113100 code; private attributes; any
    attribute of the action table that should be gone but is present, or holds a value where
    the profile allows only an empty, dummy or pseudonymous one; any person name other than
    the dummy. Dates and times count as retained only when 113107 is declared; descriptions
    only when their value is in ``safe_descriptors``.
    """
    found: list[str] = []
    if _shifted is None:
        if ds.get("PatientIdentityRemoved") != "YES":
            found.append("PatientIdentityRemoved is not YES")
        codes = [item.get("CodeValue") for item in ds.get("DeidentificationMethodCodeSequence", [])]
        if BASIC_PROFILE[0] not in codes:
            found.append(f"DeidentificationMethodCodeSequence lacks {BASIC_PROFILE[0]}")
        _shifted = RETAIN_MODIFIED_DATES[0] in codes
    for element in ds:
        where = f"{_path}{element.keyword or element.tag}"
        if element.tag.is_private:
            found.append(f"{where}: private attribute")
            continue
        keyword = element.keyword
        action = _resolve(action_for(element.tag))
        value = "" if element.VR == "SQ" else str(element.value or "")
        retained = (_shifted and element.VR in ("DA", "DT", "TM") and keyword not in _NEVER_SHIFTED) or (
            keyword in DESCRIPTORS and value in safe_descriptors)
        if element.VR == "PN" and value and value != _DUMMY["PN"]:
            found.append(f"{where}: person name present")
        elif retained or action in ("K", "U"):
            pass
        elif action == "X":
            found.append(f"{where}: must be removed")
        elif keyword == "PatientID" and value and not PSEUDONYM.match(value):
            found.append(f"{where}: must be empty or a pseudonym")
        elif keyword == "PatientID":
            pass
        elif action == "Z" and value:
            found.append(f"{where}: must be empty or a dummy value")
        elif action == "D" and value and value != _DUMMY.get(element.VR, ""):
            found.append(f"{where}: must be a dummy value")
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                found += find_identifying(item, safe_descriptors=safe_descriptors, _path=f"{where}[{index}].",
                                          _shifted=_shifted)
    return found


__all__ = ["ACTIONS", "TABLE_E11", "MASKED_E11", "action_for", "DeidentificationOptions", "deidentify", "find_identifying", "BASIC_PROFILE",
           "RETAIN_MODIFIED_DATES", "CLEAN_DESCRIPTORS"]
