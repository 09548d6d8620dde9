"""The worklist: jobs waiting for the reviewer, sorted and filtered, with claims.

The model of the worklist dashboard (no widgets). Rows come from the platform API
(``GET api/review/worklist``: only datasets the reviewer may review) with what identifies the case
to a clinician added from the PACS through the gateway, within the reviewer's grant: patient ID,
accession number, study date and description, modality and series description (one study and one
series QIDO per case, cached).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from traitlets import HasTraits, List, Unicode

from ..dicom_json import first_value
from ..dicomweb import DICOMwebProtocol
from ..errors import DICOMwebError
from ..platform_client import ReviewAPI

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class WorklistRow:
    """One job waiting for review, as the worklist shows it."""

    job_id: str
    dataset: str
    study_date: str
    pipeline: str
    model: str
    age_s: float
    claimed_by: str | None
    proposals: tuple[str, ...]
    can_finalise: bool
    item: dict[str, Any]
    patient_id: str = ""
    accession: str = ""
    study_description: str = ""
    modality: str = ""
    series_description: str = ""

    @property
    def age(self) -> str:
        """Age as ``3d 4h``, ``2h 5m`` or ``12m``."""
        minutes = int(self.age_s // 60)
        days, hours, mins = minutes // 1440, minutes % 1440 // 60, minutes % 60
        return f"{days}d {hours}h" if days else (f"{hours}h {mins}m" if hours else f"{mins}m")


#: Columns the worklist sorts by (``sort_by`` trait), each with its key (oldest first within a column).
SORT_KEYS: dict[str, Callable[[WorklistRow], Any]] = {
    "age": lambda r: -r.age_s, "study date": lambda r: r.study_date, "patient": lambda r: (r.patient_id, -r.age_s),
    "site": lambda r: (r.dataset, -r.age_s),
    "pipeline": lambda r: (r.pipeline, -r.age_s), "model": lambda r: (r.model, -r.age_s),
}


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _study_date(value: str) -> str:
    """DICOM DA ``YYYYMMDD`` as ``YYYY-MM-DD`` (as given when not a DA)."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


class WorklistModel(HasTraits):
    """The reviewer's worklist.

    Traits: ``rows`` (every row, refreshed by :meth:`refresh`), ``sort_by`` (a key of
    :data:`SORT_KEYS`), ``site`` (a dataset, or ``""`` for all), ``text`` (free-text filter on
    pipeline, model and site), ``message``.
    """

    rows = List()
    sort_by = Unicode("age")
    site = Unicode("")
    text = Unicode("")
    message = Unicode("")

    def __init__(self, api: ReviewAPI, dicomweb: DICOMwebProtocol | None = None, *, user: str = "",
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        super().__init__()
        self.api, self.dicomweb, self.user, self._now = api, dicomweb, user, now
        self._studies: dict[str, dict[str, str]] = {}
        self._series: dict[str, dict[str, str]] = {}

    def refresh(self) -> None:
        """Fetch the worklist again (claims and proposals change under us)."""
        items = self.api.worklist()
        now = self._now()
        rows = []
        for item in items:
            claim = item.get("claim") or {}
            model = f"{item.get('model_name') or '?'} v{item.get('model_version') or '?'}"
            study = self._study_of(str(item.get("study_instance_uid") or ""))
            series = self._series_of(str(item.get("study_instance_uid") or ""), str(item.get("series_instance_uid") or ""))
            rows.append(WorklistRow(
                job_id=str(item["job_id"]), dataset=str(item.get("dataset") or ""),
                study_date=study.get("date", ""), patient_id=study.get("patient_id", ""),
                accession=study.get("accession", ""), study_description=study.get("description", ""),
                modality=series.get("modality", "") or study.get("modalities", ""),
                series_description=series.get("description", ""),
                pipeline=f"{item.get('pipeline_id')} {item.get('pipeline_version') or ''}".strip(), model=model,
                age_s=max(0.0, (now - _parse_time(str(item["waiting_since"]))).total_seconds()),
                claimed_by=claim.get("actor"), can_finalise=bool(item.get("can_finalise")),
                proposals=tuple(f"{p['decision']} by {p['actor']}" for p in item.get("proposals") or ()),
                item=item,
            ))
        self.rows = rows
        self.message = f"{len(rows)} case{'s' if len(rows) != 1 else ''} waiting for review"

    def _study_of(self, study: str) -> dict[str, str]:
        """Date, patient ID, accession number, description and modalities of a study (cached)."""
        if not study or self.dicomweb is None:
            return {}
        if study not in self._studies:
            try:
                found = self.dicomweb.search_for_studies(
                    search_filters={"StudyInstanceUID": study},
                    fields=["StudyDate", "PatientID", "AccessionNumber", "StudyDescription", "ModalitiesInStudy"])
            except DICOMwebError as exc:
                log.warning("study lookup failed: %s", type(exc).__name__)
                return {}
            item = found[0] if found else {}
            modalities = (item.get("00080061") or {}).get("Value") or []
            self._studies[study] = {
                "date": _study_date(str(first_value(item, "00080020", "") or "")),
                "patient_id": str(first_value(item, "00100020", "") or ""),
                "accession": str(first_value(item, "00080050", "") or ""),
                "description": str(first_value(item, "00081030", "") or ""),
                "modalities": "/".join(str(m) for m in modalities)}
        return self._studies[study]

    def _series_of(self, study: str, series: str) -> dict[str, str]:
        """Modality and description of the reviewed series (cached)."""
        if not study or not series or self.dicomweb is None:
            return {}
        if series not in self._series:
            try:
                found = self.dicomweb.search_for_series(
                    search_filters={"StudyInstanceUID": study, "SeriesInstanceUID": series},
                    fields=["Modality", "SeriesDescription"])
            except DICOMwebError as exc:
                log.warning("series lookup failed: %s", type(exc).__name__)
                return {}
            item = found[0] if found else {}
            self._series[series] = {"modality": str(first_value(item, "00080060", "") or ""),
                                    "description": str(first_value(item, "0008103E", "") or "")}
        return self._series[series]

    def sites(self) -> list[str]:
        return sorted({r.dataset for r in self.rows})

    def visible(self) -> list[WorklistRow]:
        """Rows after the site and text filters, in ``sort_by`` order."""
        text = self.text.strip().lower()
        rows = [r for r in self.rows if (not self.site or r.dataset == self.site)
                and (not text or text in f"{r.pipeline} {r.model} {r.dataset} {r.patient_id} {r.accession} "
                                         f"{r.study_description} {r.series_description}".lower())]
        return sorted(rows, key=SORT_KEYS.get(self.sort_by, SORT_KEYS["age"]))

    def claim(self, job_id: str, *, force: bool = False) -> dict[str, Any]:
        """Claim a case before opening it; :class:`~medimg_kernel.errors.CaseClaimedError` if taken.

        Returns the row's worklist item.
        """
        self.api.claim(job_id, force=force)
        for row in self.rows:
            if row.job_id == job_id:
                return row.item
        return self.api.review_job(job_id)

    def release(self, job_id: str) -> None:
        self.api.release(job_id)
