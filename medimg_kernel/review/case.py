"""One case under review: the series, the model's labels, the reviewer's edits and the decision.

The model of the viewer dashboard (no widgets here). :meth:`ReviewCase.open` loads the series and
the model SEG through the gateway and starts from the reviewer's own draft if there is one,
else from the newest proposal that carries labels (a resident's correction), else from the
model's labels. Every edit is kept as a draft on the platform (:meth:`save_draft`), so a reload
loses nothing.

Deciding (:meth:`decide`):

* someone with ``finalise`` completes the review: for ``accepted`` / ``corrected`` a new SEG
  (the model's type id without ``model_``, the reviewer in ContentCreatorName, referencing the
  model SEG) and a TID 1500 SR are stored through the gateway, then the job is decided through
  the tasks API with the SEG/SR UIDs, the model-vs-final Dice and the review time;
* someone with ``review`` only proposes: the draft goes with the proposal and the job keeps
  waiting for an attending.

Nothing is half-written: the job's state is checked first, the draft is saved before anything
is stored, and if the PACS is unreachable nothing is decided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from traitlets import Bool, HasTraits, Unicode

from ..dicom_json import first_value
from ..dicomweb import DICOMwebProtocol
from ..errors import DICOMwebError, MedImgError, ReviewConflictError, SegmentationError
from ..platform_client import ReviewAPI
from ..volume import Volume
from .draft import Draft, decode_draft, encode_draft
from .editing import Edit, LabelEditor, Patch

log = logging.getLogger(__name__)

#: The decisions of a manual stage (DESIGN.md §4).
ACCEPTED, CORRECTED, REJECTED = "accepted", "corrected", "rejected"
WAITING = "waiting_review"
#: A fill spreads to connected voxels within this many HU of the clicked voxel.
FILL_TOLERANCE_HU = 100.0


def dice_by_segment(reference: np.ndarray, other: np.ndarray, segments: tuple[str, ...]) -> dict[str, float]:
    """Dice coefficient of each segment (label ``n`` = ``segments[n - 1]``); 1.0 when both are empty."""
    out = {}
    for value, name in enumerate(segments, start=1):
        a, b = reference == value, other == value
        total = int(a.sum()) + int(b.sum())
        out[name] = 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
    return out


def reviewer_person_name(user: str) -> str:
    """A hub user name as a DICOM PN value (ContentCreatorName): the family-name component."""
    cleaned = "".join(c if c.isalnum() or c in "-._ " else "_" for c in user)[:64]
    return (cleaned or "UNKNOWN") + "^"  # one component, said explicitly (PS3.5 6.2.1.2)


def find_instance(dicomweb: DICOMwebProtocol, study: str, sop_instance_uid: str) -> Dataset:
    """Retrieve one instance of ``study`` by SOP Instance UID (its series looked up with QIDO)."""
    found = dicomweb.search_for_instances(study, search_filters={"SOPInstanceUID": sop_instance_uid})
    series = {first_value(item, "0020000E") for item in found}
    if len(series) != 1 or "" in series:
        raise SegmentationError(f"instance {sop_instance_uid} is not in the PACS (or not visible to you)")
    return dicomweb.retrieve_instance(study, series.pop(), sop_instance_uid)


class ReviewCase(HasTraits):
    """The state of one case in the viewer dashboard.

    Traits (observed by the view): ``message`` (what to tell the reviewer), ``state``
    (``open | saving | proposed | decided``), ``dirty`` (edits not yet saved as a draft),
    ``can_undo`` / ``can_redo``.
    """

    message = Unicode("")
    state = Unicode("open")
    dirty = Bool(False)
    can_undo = Bool(False)
    can_redo = Bool(False)

    def __init__(self, *, item: dict[str, Any], volume: Volume, model_seg: Dataset, model_labels: np.ndarray,
                 segments: tuple[str, ...], start: Draft, api: ReviewAPI, dicomweb: DICOMwebProtocol,
                 reviewer: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.item, self.volume, self.model_seg = item, volume, model_seg
        self.model_labels, self.segments = model_labels, segments
        self.api, self.dicomweb, self.reviewer, self._clock = api, dicomweb, reviewer, clock
        self.editor = LabelEditor(start.labels, image=volume.array, fill_tolerance_hu=FILL_TOLERANCE_HU)
        self.origin = start.origin
        self._seconds_before = start.review_seconds
        self._opened_at = clock()
        #: Segment volumes (mm³) in the model's structured report; empty when it has none.
        self.model_volumes_mm3: dict[str, float] = {}

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, api: ReviewAPI, dicomweb: DICOMwebProtocol, item: dict[str, Any], *, reviewer: str,
             clock: Callable[[], float] = time.monotonic) -> ReviewCase:
        """Load a worklist item: series, model SEG, and the labels to start from.

        Raises
        ------
        SegmentationError
            No model SEG, or a SEG that does not lie on the series (the message says which).
        DICOMwebError
            The PACS could not be reached or refused.
        """
        from ..seg import describe_seg, read_seg
        from ..series import read_series

        study, series = str(item["study_instance_uid"]), str(item["series_instance_uid"])
        seg_uids = item.get("model_seg_sop_instance_uids") or []
        if not seg_uids:
            raise SegmentationError("this job has no model SEG to review (the auto stage recorded none)")
        volume = read_series(dicomweb, study, series)
        model_seg = find_instance(dicomweb, study, str(seg_uids[0]))
        try:
            model_labels = read_seg(model_seg, volume)
        except SegmentationError as exc:
            raise SegmentationError(f"the model's SEG does not match this series: {exc}") from exc
        segments = describe_seg(model_seg).segment_names
        start = cls._starting_labels(api, item, series, volume.shape, model_labels.astype(np.uint8), segments)
        case = cls(item=item, volume=volume, model_seg=model_seg, model_labels=model_labels.astype(np.uint8),
                   segments=segments, start=start, api=api, dicomweb=dicomweb, reviewer=reviewer, clock=clock)
        case.model_volumes_mm3 = _report_volumes(dicomweb, study, item.get("model_sr_sop_instance_uids") or [])
        return case

    @staticmethod
    def _starting_labels(api: ReviewAPI, item: dict[str, Any], series: str, shape: tuple[int, int, int],
                         model_labels: np.ndarray, segments: tuple[str, ...]) -> Draft:
        job_id = str(item["job_id"])
        own = api.get_draft(job_id)
        if own is not None:
            try:
                return decode_draft(own, series_instance_uid=series, shape=shape)
            except SegmentationError as exc:
                log.warning("job %s: the saved draft is unusable (%s); starting over", job_id, exc)
        for proposal in reversed(item.get("proposals") or []):
            if proposal.get("has_mask"):
                payload = api.proposal_labels(job_id, int(proposal["id"]))
                proposed = decode_draft(payload, series_instance_uid=series, shape=shape)
                return Draft(series, proposed.labels, proposed.segments, 0.0, f"proposal:{proposal['actor']}")
        return Draft(series, model_labels.copy(), segments)

    # --- editing ---------------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return str(self.item["job_id"])

    @property
    def identity(self) -> dict[str, str]:
        """What tells a clinician which patient and study this is, from the series' own headers:
        ``patient_id``, ``accession``, ``study_date`` (YYYY-MM-DD), ``study_description``,
        ``modality``, ``series_description`` (empty strings when the headers lack them)."""
        first = self.volume.sources[0] if self.volume.sources else None
        def get(keyword: str) -> str:
            return str(first.get(keyword, "") or "") if first is not None else ""
        date = get("StudyDate")
        return {"patient_id": get("PatientID"), "accession": get("AccessionNumber"),
                "study_date": f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date,
                "study_description": get("StudyDescription"), "modality": get("Modality") or self.volume.modality,
                "series_description": get("SeriesDescription")}

    @property
    def labels(self) -> np.ndarray:
        """The current label map (z, y, x, uint8); do not modify it in place, use :meth:`edit`."""
        return self.editor.labels

    @property
    def can_finalise(self) -> bool:
        return bool(self.item.get("can_finalise"))

    @property
    def changed(self) -> bool:
        """Whether the labels differ from the model's."""
        return not np.array_equal(self.editor.labels, self.model_labels)

    def _after_change(self, patch: Patch | None) -> Patch | None:
        if patch is not None:
            self.dirty = True
        self.can_undo, self.can_redo = self.editor.can_undo, self.editor.can_redo
        return patch

    def edit(self, edit: Edit) -> Patch:
        """Apply a brush, eraser or fill edit from the viewer; returns what changed."""
        if self.state not in ("open",):
            raise ReviewConflictError(f"this case is {self.state}; it cannot be edited any more")
        patch = self.editor.apply(edit)
        self._after_change(patch if patch.changed else None)
        return patch

    def undo(self) -> Patch | None:
        return self._after_change(self.editor.undo())

    def redo(self) -> Patch | None:
        return self._after_change(self.editor.redo())

    def review_seconds(self) -> float:
        """Time spent on this case so far, across reloads (seconds)."""
        return self._seconds_before + (self._clock() - self._opened_at)

    def save_draft(self) -> None:
        """Keep the current labels on the platform (a reload resumes from them)."""
        draft = Draft(str(self.item["series_instance_uid"]), self.editor.labels, self.segments,
                      self.review_seconds(), self.origin)
        self.api.put_draft(self.job_id, encode_draft(draft))
        self.dirty = False

    def volumes_mm3(self) -> dict[str, float]:
        """Volume of each segment of the current labels (mm³)."""
        counts = np.bincount(self.editor.labels.ravel(), minlength=len(self.segments) + 1)
        voxel = float(np.prod(self.volume.spacing))
        return {name: float(counts[i]) * voxel for i, name in enumerate(self.segments, start=1)}

    def dice(self) -> dict[str, float]:
        """Model-vs-current Dice of each segment."""
        return dice_by_segment(self.model_labels, self.editor.labels, self.segments)

    # --- deciding --------------------------------------------------------------------------------

    def decide(self, decision: str, reason: str | None = None) -> dict[str, Any]:
        """Finalise (with ``finalise``) or propose (with ``review``) ``decision`` on this case.

        Returns the platform's answer. On any failure the state is back to ``open``, ``message``
        says what happened, and the draft is on the platform.

        Raises
        ------
        ValueError
            ``accepted`` after editing, ``corrected`` without edits, ``rejected`` without a reason.
        ReviewConflictError
            Someone decided the case meanwhile, or it no longer waits.
        DICOMwebError
            The PACS could not be reached (nothing decided).
        """
        self._check_decision(decision, reason)
        self.state = "saving"
        try:
            current = self.api.review_job(self.job_id)
            if current.get("status") != WAITING:
                who = current.get("decided_by") or "someone else"
                raise ReviewConflictError(f"this case was {current.get('status')} by {who} meanwhile; "
                                          "your edits are kept as a draft", status=409)
            self.save_draft()
            if not self.can_finalise:
                answer = self.api.decide(self.job_id, decision, reason=reason,
                                         outputs={"review_time_s": round(self.review_seconds(), 1)})
                self.state, self.message = "proposed", f"Proposed '{decision}'; the case waits for an attending."
                return answer
            outputs = self._final_outputs(decision)
            answer = self.api.decide(self.job_id, decision, reason=reason, outputs=outputs)
        except (MedImgError, OSError) as exc:
            self.state = "open"
            self.message = _failure_message(exc)
            raise
        self.state = "decided"
        self.message = f"Finalised as '{decision}'." + (
            f" Stored SEG {outputs['seg_sop_instance_uids'][0]}." if outputs.get("seg_sop_instance_uids") else "")
        return answer

    def _check_decision(self, decision: str, reason: str | None) -> None:
        if self.state != "open":
            raise ReviewConflictError(f"this case is {self.state}; it cannot be decided again")
        if decision not in (ACCEPTED, CORRECTED, REJECTED):
            raise ValueError(f"decision {decision!r} must be one of accepted, corrected, rejected")
        if decision == ACCEPTED and self.changed:
            raise ValueError("you edited the labels: use 'Correct & accept', or undo your edits to accept as is")
        if decision == CORRECTED and not self.changed:
            raise ValueError("nothing was corrected: use 'Accept', or edit the labels first")
        if decision == REJECTED and not (reason or "").strip():
            raise ValueError("a rejection needs a reason")

    def _final_outputs(self, decision: str) -> dict[str, Any]:
        """Store the reviewed SEG + SR (unless rejected); the outputs recorded with the decision."""
        dice = self.dice()
        outputs: dict[str, Any] = {
            "model_seg_sop_instance_uid": str(self.model_seg.SOPInstanceUID), "reviewer": self.reviewer,
            "review_time_s": round(self.review_seconds(), 1), "dice": dice,
            "dice_mean": float(np.mean(list(dice.values()))) if dice else None,
        }
        if decision == REJECTED:
            return outputs
        from ..sr import write_sr
        from ..seg import describe_seg, write_seg

        creator = reviewer_person_name(self.reviewer)
        seg = write_seg(self.volume, self.editor.labels, list(self.segments), type_id=describe_seg(self.model_seg).type_id,
                        content_creator=creator, referenced_seg=self.model_seg)
        sr = write_sr(seg, self.volume, self.editor.labels, content_creator=creator)
        self.dicomweb.store_instances([seg, sr])
        outputs.update(seg_sop_instance_uids=[str(seg.SOPInstanceUID)], sr_sop_instance_uids=[str(sr.SOPInstanceUID)],
                       series_instance_uids=[str(seg.SeriesInstanceUID), str(sr.SeriesInstanceUID)])
        return outputs


def _report_volumes(dicomweb: DICOMwebProtocol, study: str, sr_uids: list[str]) -> dict[str, float]:
    """Segment volumes (mm³) of the model's SR; empty (and logged) when it cannot be read."""
    if not sr_uids:
        return {}
    from ..sr import read_sr

    try:
        return read_sr(find_instance(dicomweb, study, str(sr_uids[0])))
    except (MedImgError, OSError) as exc:
        log.warning("the model's SR could not be read: %s", type(exc).__name__)
        return {}


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, ReviewConflictError):
        return str(exc)
    if isinstance(exc, DICOMwebError):
        return ("The PACS could not store the result, so nothing was decided; your edits are kept as a "
                f"draft. Try again in a moment. ({exc})")
    return f"Saving failed, nothing was decided; your edits are kept as a draft when possible. ({exc})"
