"""The review model layer without a browser or servers: a local DICOM folder stands in for the
gateway (same protocol) and an in-memory fake for the platform API (the real one is tested in
tests/hub/test_review_api.py and, end to end, in tests/browser/)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from medimg_kernel.client import DICOMfolderClient
from medimg_kernel.errors import CaseClaimedError, DICOMwebError, ReviewConflictError, SegmentationError
from medimg_kernel.sr import read_sr
from medimg_kernel.review.case import ReviewCase, dice_by_segment
from medimg_kernel.review.draft import Draft, decode_draft, encode_draft
from medimg_kernel.review.editing import Edit
from medimg_kernel.review.worklist import WorklistModel
from medimg_kernel.seg import AlgorithmIdentification, describe_seg, read_seg, write_seg
from medimg_kernel.series import read_series

from ..series_factory import small_ct_series

SEGMENTS = ["liver", "spleen"]


class FakePlatform:
    """The review API in memory, with the platform's rules that matter to the model layer."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = {**item, "proposals": [], "claim": None}
        self.status, self.decided_by = "waiting_review", None
        self.drafts: dict[str, bytes] = {}
        self.proposal_masks: dict[int, bytes] = {}
        self.decisions: list[dict[str, Any]] = []
        self.user = "alan"

    def worklist(self) -> list[dict[str, Any]]:
        return [self.item] if self.status == "waiting_review" else []

    def review_job(self, job_id: str) -> dict[str, Any]:
        return {**self.item, "status": self.status, "decided_by": self.decided_by}

    def claim(self, job_id: str, *, force: bool = False) -> dict[str, Any]:
        held = self.item["claim"]
        if held and held["actor"] != self.user and not force:
            raise CaseClaimedError("claimed", claim=held)
        self.item["claim"] = {"actor": self.user, "expires_at": "2026-12-02T10:00:00+00:00"}
        return self.item["claim"]

    def release(self, job_id: str) -> None:
        self.item["claim"] = None

    def get_draft(self, job_id: str) -> bytes | None:
        return self.drafts.get(self.user)

    def put_draft(self, job_id: str, payload: bytes) -> str:
        if self.status != "waiting_review":
            raise ReviewConflictError("no longer waiting", status=409)
        self.drafts[self.user] = payload
        return "now"

    def delete_draft(self, job_id: str) -> None:
        self.drafts.pop(self.user, None)

    def proposal_labels(self, job_id: str, proposal_id: int) -> bytes:
        return self.proposal_masks[proposal_id]

    def decide(self, job_id: str, decision: str, *, reason: str | None = None,
               outputs: dict[str, Any] | None = None) -> dict[str, Any]:
        self.decisions.append({"actor": self.user, "decision": decision, "reason": reason, "outputs": outputs})
        if not self.item["can_finalise"]:
            pid = len(self.proposal_masks) + 1
            self.proposal_masks[pid] = self.drafts.pop(self.user)
            self.item["proposals"].append({"id": pid, "actor": self.user, "decision": decision, "has_mask": True})
            return {"proposal": decision}
        self.status, self.decided_by = decision, self.user
        return {"status": decision}

    def statistics(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def pacs(tmp_path):
    """A DICOM folder with a small CT series and a model SEG of it; returns (client, item, labels)."""
    (tmp_path / "pacs").mkdir()
    client = DICOMfolderClient(tmp_path / "pacs")
    series = small_ct_series(seed=7, shape=(8, 24, 24))
    client.store_instances(series)
    volume = read_series(client, str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID))
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:6, 4:12, 4:12] = 1
    labels[3:5, 14:20, 14:20] = 2
    seg = write_seg(volume, labels, SEGMENTS, type_id="organs",
                    algorithm=AlgorithmIdentification(name="organ-segmentation", version="4"))
    client.store_instances([seg])
    item = {"job_id": "0" * 8 + "-0000-0000-0000-" + "1" * 12, "dataset": "site-a",
            "study_instance_uid": volume.study_instance_uid, "series_instance_uid": volume.series_instance_uid,
            "model_seg_sop_instance_uids": [str(seg.SOPInstanceUID)], "model_name": "organ-segmentation",
            "model_version": 4, "pipeline_id": "organ-segmentation", "pipeline_version": "1.0",
            "waiting_since": "2026-12-01T08:00:00+00:00", "can_finalise": True}
    return client, item, labels


def paint(case: ReviewCase, z: int = 1, segment: int = 1) -> None:
    case.edit(Edit(kind="stroke", view="axial", slice=z, points=((10, 10), (10, 14)), radius=1, segment=segment))


def test_opens_on_the_model_labels_then_resumes_from_the_draft(pacs):
    client, item, labels = pacs
    api = FakePlatform(item)
    case = ReviewCase.open(api, client, api.item, reviewer="alan")
    assert np.array_equal(case.labels, labels) and not case.changed and case.origin == "model"
    assert case.segments == tuple(SEGMENTS)
    source = case.volume.sources[0]
    assert case.identity["patient_id"] == str(source.PatientID) and case.identity["modality"] == "CT"
    paint(case)
    assert case.changed and case.dirty and case.can_undo
    edited = case.labels.copy()
    case.save_draft()
    assert not case.dirty
    reopened = ReviewCase.open(api, client, api.item, reviewer="alan")  # a reload
    assert np.array_equal(reopened.labels, edited)
    # the undo history belongs to the page that made the edits: a reload starts from the draft with none
    assert not reopened.can_undo and reopened.undo() is None
    assert np.array_equal(reopened.labels, edited)


def test_attending_finalises_a_correction_as_a_new_seg_and_sr(pacs, assert_valid_dicom):
    client, item, labels = pacs
    api = FakePlatform(item)
    ticks = iter([100.0, 130.0, 131.0, 132.0, 133.0])
    case = ReviewCase.open(api, client, api.item, reviewer="alan", clock=lambda: next(ticks))
    with pytest.raises(ValueError, match="nothing was corrected"):
        case.decide("corrected")
    paint(case, z=1, segment=2)
    with pytest.raises(ValueError, match="edited the labels"):
        case.decide("accepted")
    with pytest.raises(ValueError, match="needs a reason"):
        case.decide("rejected", " ")
    final = case.labels.copy()
    case.decide("corrected", "spleen extended")
    assert case.state == "decided"
    decision = api.decisions[-1]
    outputs = decision["outputs"]
    assert decision["decision"] == "corrected" and outputs["reviewer"] == "alan"
    assert outputs["review_time_s"] == pytest.approx(30.0, abs=3)
    assert outputs["dice"]["liver"] == 1.0 and 0 < outputs["dice"]["spleen"] < 1
    # the new SEG reads back equal to the painted labels, names the reviewer, references the model SEG
    seg = client.retrieve_instance(item["study_instance_uid"], outputs["series_instance_uids"][0],
                                   outputs["seg_sop_instance_uids"][0])
    info = describe_seg(seg)
    assert info.type_id == "organs" and not info.is_model and info.content_creator == "alan^"
    assert item["model_seg_sop_instance_uids"][0] in {sop for _, sop in info.referenced_segs}
    assert np.array_equal(read_seg(seg, case.volume), final)
    assert_valid_dicom(seg)
    sr = client.retrieve_instance(item["study_instance_uid"], outputs["series_instance_uids"][1],
                                  outputs["sr_sop_instance_uids"][0])
    voxel_mm3 = float(np.prod(case.volume.spacing))
    assert read_sr(sr)["spleen"] == pytest.approx((final == 2).sum() * voxel_mm3, rel=1e-3)
    with pytest.raises(ReviewConflictError):
        case.decide("accepted")


def test_resident_proposes_and_attending_starts_from_the_proposal(pacs):
    client, item, _ = pacs
    api = FakePlatform({**item, "can_finalise": False})
    api.user = "rita"
    resident = ReviewCase.open(api, client, api.item, reviewer="rita")
    paint(resident, z=2)
    painted = resident.labels.copy()
    resident.decide("corrected", "liver edge")
    assert resident.state == "proposed" and api.status == "waiting_review" and "rita" not in api.drafts
    api.user, api.item["can_finalise"] = "alan", True
    attending = ReviewCase.open(api, client, api.item, reviewer="alan")
    assert attending.origin == "proposal:rita" and np.array_equal(attending.labels, painted)
    attending.decide("corrected")
    assert api.status == "corrected"


def test_a_case_decided_meanwhile_is_refused_and_nothing_is_stored(pacs):
    client, item, _ = pacs
    api = FakePlatform(item)
    case = ReviewCase.open(api, client, api.item, reviewer="alan")
    paint(case)
    api.status, api.decided_by = "accepted", "someone"
    before = len(client.search_for_instances(item["study_instance_uid"]))
    with pytest.raises(ReviewConflictError, match="accepted by someone meanwhile"):
        case.decide("corrected")
    assert case.state == "open" and "meanwhile" in case.message
    assert len(client.search_for_instances(item["study_instance_uid"])) == before


def test_pacs_unreachable_decides_nothing_and_keeps_the_draft(pacs, monkeypatch):
    client, item, _ = pacs
    api = FakePlatform(item)
    case = ReviewCase.open(api, client, api.item, reviewer="alan")
    paint(case)

    def unreachable(*_: Any, **__: Any) -> None:
        raise DICOMwebError("store_instances: cannot reach the DICOMweb server", url="http://pacs")

    monkeypatch.setattr(client, "store_instances", unreachable)
    with pytest.raises(DICOMwebError):
        case.decide("corrected")
    assert api.decisions == [] and api.status == "waiting_review" and case.state == "open"
    assert "kept as a draft" in case.message
    kept = decode_draft(api.drafts["alan"], series_instance_uid=item["series_instance_uid"], shape=case.labels.shape)
    assert np.array_equal(kept.labels, case.labels)


def test_a_seg_of_another_series_is_refused_with_a_clear_message(pacs):
    client, item, _ = pacs
    other = small_ct_series(seed=8, shape=(8, 24, 24))
    client.store_instances(other)
    volume = read_series(client, str(other[0].StudyInstanceUID), str(other[0].SeriesInstanceUID))
    seg = write_seg(volume, np.ones(volume.shape, np.uint8), ["liver"], type_id="organs",
                    algorithm=AlgorithmIdentification(name="m", version="1"))
    seg.StudyInstanceUID = item["study_instance_uid"]  # filed in the study under review, but of another series
    client.store_instances([seg])
    wrong = {**item, "model_seg_sop_instance_uids": [str(seg.SOPInstanceUID)]}
    with pytest.raises(SegmentationError, match="does not match this series"):
        ReviewCase.open(FakePlatform(wrong), client, wrong, reviewer="alan")
    with pytest.raises(SegmentationError, match="no model SEG"):
        ReviewCase.open(FakePlatform(item), client, {**item, "model_seg_sop_instance_uids": []}, reviewer="alan")


def test_draft_codec_refuses_foreign_or_broken_drafts():
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 2, 3] = 2
    payload = encode_draft(Draft("1.2.3", labels, ("liver", "spleen"), 12.5, "model"))
    back = decode_draft(payload, series_instance_uid="1.2.3", shape=(3, 4, 5))
    assert np.array_equal(back.labels, labels) and back.review_seconds == 12.5
    with pytest.raises(SegmentationError, match="another series"):
        decode_draft(payload, series_instance_uid="1.2.4", shape=(3, 4, 5))
    with pytest.raises(SegmentationError, match="shape"):
        decode_draft(payload, series_instance_uid="1.2.3", shape=(3, 4, 6))
    with pytest.raises(SegmentationError, match="not readable"):
        decode_draft(b"garbage", series_instance_uid="1.2.3", shape=(3, 4, 5))


def test_dice_by_segment():
    a, b = np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8)
    a[0, :2], b[0, :1] = 1, 1
    assert dice_by_segment(a, b, ("liver", "spleen")) == {"liver": pytest.approx(2 * 4 / 12), "spleen": 1.0}


def test_worklist_sorts_filters_and_reports_claims(pacs):
    client, item, _ = pacs
    api = FakePlatform(item)
    second = {**item, "job_id": item["job_id"][:-1] + "2", "dataset": "site-b", "model_version": 5,
              "waiting_since": "2026-12-01T11:00:00+00:00", "proposals": [], "claim": {"actor": "rita"}}
    api.worklist = lambda: [api.item, second]  # type: ignore[method-assign]
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    model = WorklistModel(api, client, now=lambda: now)
    model.refresh()
    assert [r.age for r in model.visible()] == ["4h 0m", "1h 0m"]  # oldest first
    first = model.visible()[0]
    assert first.study_date.count("-") == 2 or first.study_date == ""
    # what identifies the case to a clinician, from the PACS
    assert first.patient_id and first.modality == "CT" and first.patient_id in {r.patient_id for r in model.rows}
    model.text = first.patient_id.lower()
    assert [r.job_id for r in model.visible()] == [r.job_id for r in model.rows]  # both rows are this patient's
    model.text = ""
    model.site = "site-b"
    assert [r.dataset for r in model.visible()] == ["site-b"] and model.visible()[0].claimed_by == "rita"
    model.site, model.text = "", "v5"
    assert [r.model for r in model.visible()] == ["organ-segmentation v5"]
    model.text, model.sort_by = "", "site"
    assert [r.dataset for r in model.visible()] == ["site-a", "site-b"]
    api.item["claim"] = {"actor": "rita", "expires_at": (now + timedelta(minutes=5)).isoformat()}
    with pytest.raises(CaseClaimedError) as info:
        model.claim(item["job_id"])
    assert info.value.claim["actor"] == "rita"
    assert model.claim(item["job_id"], force=True)["job_id"] == item["job_id"]
