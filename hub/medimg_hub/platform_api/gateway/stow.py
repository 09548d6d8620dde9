"""Reading a STOW-RS request body before it is forwarded: which studies it would write.

The body arrives in a spool file (memory up to :data:`SPOOL_MEMORY_BYTES`, then disk), so a
large upload is never held in memory. Each part's DICOM header is read (no pixel data) for
its StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID and InstitutionName.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import IO

import pydicom
from pydicom.errors import InvalidDicomError

from medimg_kernel.errors import DICOMwebError
from medimg_kernel.multipart import boundary_from_content_type, iter_parts

from medimg_hub.platform_api.gateway.paths import BadRequest, check_uid

#: Body bytes kept in memory before the spool moves to a temporary file.
SPOOL_MEMORY_BYTES = 16 << 20
#: Largest STOW-RS body accepted (bytes).
MAX_STOW_BYTES = 4 << 30
_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstitutionName", "SOPClassUID"]
#: Results of review (DICOM SEG and the SR that goes with it): reviewers holding ``finalise``
#: may store these, and only these, into existing studies of their dataset.
REVIEW_RESULT_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
})


@dataclass(frozen=True)
class StowInstance:
    """The identifying attributes of one instance of a STOW-RS request (UIDs and institution only)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    institution: str | None
    sop_class_uid: str = ""

    @property
    def review_result(self) -> bool:
        """A SEG or SR, which a finaliser may store (:data:`REVIEW_RESULT_CLASSES`)."""
        return self.sop_class_uid in REVIEW_RESULT_CLASSES


def _instance(body: bytes, index: int) -> StowInstance:
    try:
        ds = pydicom.dcmread(BytesIO(body), stop_before_pixels=True, force=True, specific_tags=_TAGS)
        uids = [str(ds.get(tag, "")) for tag in _TAGS[:3]]
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as exc:
        raise BadRequest(f"part {index} is not a readable DICOM instance") from exc
    for uid, what in zip(uids, ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"), strict=True):
        check_uid(uid, f"{what} of part {index}")
    institution = str(ds.get("InstitutionName", "")).strip() or None
    return StowInstance(uids[0], uids[1], uids[2], institution, str(ds.get("SOPClassUID", "")))


def scan_instances(body: IO[bytes], content_type: str) -> list[StowInstance]:
    """The instances of a ``multipart/related; type="application/dicom"`` body (rewinds it after).

    Raises
    ------
    BadRequest
        Not multipart/related, no parts, or a part that is not a DICOM instance with valid UIDs.
    """
    try:
        boundary = boundary_from_content_type(content_type)
    except DICOMwebError as exc:
        raise BadRequest("STOW-RS needs a multipart/related body with a boundary") from exc
    body.seek(0)
    found = []
    try:
        for index, part in enumerate(iter_parts(body, boundary, 4 << 20)):
            found.append(_instance(part.tobytes(), index))
    except DICOMwebError as exc:
        raise BadRequest("malformed multipart body") from exc
    finally:
        body.seek(0)
    if not found:
        raise BadRequest("STOW-RS body without instances")
    return found
