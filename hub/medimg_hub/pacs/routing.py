"""Routing: which dataset a study that arrives over DICOM belongs to (``[[routes]]``, first match wins).

A rule holds when every condition it names holds for the instance: the sender's calling AE title,
InstitutionName, StationName, and ``Keyword=pattern`` conditions on any attribute, matched as a
QIDO-RS query would (exact, or ``*``/``?`` wildcards; :func:`medimg_kernel.qido.value_matches`).
No rule holding: ``[receiver] default_dataset``, or no dataset (the study is stored, unassigned).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medimg_kernel.qido import value_matches

from medimg_hub.settings import RouteSettings


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return [""]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value] or [""]
    return [str(value)]


def route(routes: Sequence[RouteSettings], calling_aet: str, ds: Dataset, default: str = "") -> str | None:
    """The dataset an instance from ``calling_aet`` goes to; None when it goes to none."""
    for rule in routes:
        if rule.calling_aet and not value_matches(calling_aet.strip(), rule.calling_aet, "AE"):
            continue
        if all(any(value_matches(v, pattern, dictionary_VR(tag_for_keyword(key))) for v in _values(ds, key))
               for key, pattern in rule.conditions()):
            return rule.dataset
    return default or None


def is_image(sop_class_uid: str) -> bool:
    """Whether a storage SOP class holds an image: its name in pydicom's UID dictionary says
    "Image Storage" (CT, MR, CR, DX and MG "For Presentation" and "For Processing", PET, US,
    secondary capture, enhanced and legacy-converted multi-frame). Reports, documents (PDF),
    presentation states, segmentations, RT objects, waveforms, raw data and unknown (private)
    classes are not."""
    return "Image Storage" in UID(sop_class_uid).name


__all__ = ["route", "is_image"]
