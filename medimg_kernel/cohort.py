"""Cohorts: the studies a query selects, exactly, on any DICOMweb server.

``find_studies(client, {"InstitutionName": "Northfield General Hospital (synthetic)",
"StudyDate": "20200101-20251231", "Modality": "CT"})`` answers what the query says, whatever the
server's QIDO-RS can match at the study level:

* **study-level attributes** (patient and study: :data:`STUDY_LEVEL`) go to a study-level query;
* a query that also names **series-level attributes** (Modality, SeriesDescription,
  BodyPartExamined, StationName, ...) is asked at the series level (``/series?...``), where the
  study's own attributes are matched too, and a study is in the cohort when one of its series
  matches (Orthanc answers a study-level query on Modality with nothing at all);
* **values with spaces**, which Orthanc cannot match, are sent with ``?`` in their place
  (:mod:`medimg_kernel.qido`) and the results checked against the exact value; a result that
  does not carry the attribute (Orthanc returns InstitutionName at neither the study nor the
  series level) is checked on one of its instances (an instance-level query with
  ``includefield``, one request per candidate).

Wildcards (``*``, ``?``), date ranges (``20200101-20201231``) and UID lists work as PS3.4
C.2.2.2 says. An unknown attribute is refused by name (:class:`~medimg_kernel.qido.QueryError`);
a query that matches nothing returns ``[]`` (the CLI says so and queues nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from . import qido
from .dicom_json import first_value
from .dicomweb import DICOMwebProtocol, DicomJSON

log = logging.getLogger(__name__)

#: Attributes a study-level QIDO-RS query matches (PS3.18 Table 10.6.1-5, and InstitutionName,
#: which Orthanc keeps per study). Any other attribute sends the query to the series level.
STUDY_LEVEL = frozenset({
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
    "StudyDescription", "StudyID", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDs", "InstitutionName", "RequestedProcedureDescription",
})
STUDY_UID, SERIES_UID = "0020000D", "0020000E"


def _verified(client: DICOMwebProtocol, study: str, series: str | None, exact: Mapping[str, str]) -> bool:
    """Whether an instance of the study (of the series, if given) matches ``exact``, asked with includefield."""
    fields = qido.include_fields(exact)
    found = client.search_for_instances(study, series, fields=fields, limit=1)
    return bool(found) and qido.item_matches(found[0], exact) is True


def find_studies(client: DICOMwebProtocol, filters: Mapping[str, Any]) -> list[str]:
    """StudyInstanceUIDs of the studies matching every filter, in the server's order.

    Parameters
    ----------
    client
        Any DICOMweb client (the gateway from a kernel, the PACS from the hub).
    filters
        ``{attribute keyword or tag: value}``: single values, wildcards, ranges (dates, times),
        UID lists. Empty: every study the client may see.

    Raises
    ------
    QueryError
        A key is not a DICOM attribute.
    """
    pairs = qido.query_pairs(filters)
    keywords = {qido.attribute(key)[0] for key, _ in pairs if key not in qido.CONTROL_KEYS}
    exact = qido.approximated(pairs)
    query = dict(pairs)
    if keywords <= STUDY_LEVEL:
        items = client.search_for_studies(search_filters=query, fields=qido.include_fields(exact))
        return [uid for item in items if (uid := first_value(item, STUDY_UID, None))
                and _accept(client, item, uid, None, exact)]
    items = client.search_for_series(search_filters=query, fields=qido.include_fields(exact, [STUDY_UID]))
    studies: list[str] = []
    for item in items:
        uid = first_value(item, STUDY_UID, None)
        if uid and uid not in studies and _accept(client, item, uid, first_value(item, SERIES_UID, None), exact):
            studies.append(uid)
    return studies


def _accept(client: DICOMwebProtocol, item: DicomJSON, study: str, series: str | None,
            exact: Mapping[str, str]) -> bool:
    if not exact:
        return True
    decided = qido.item_matches(item, exact)
    if decided is None:
        return _verified(client, study, series, exact)
    return decided


__all__ = ["STUDY_LEVEL", "find_studies"]
