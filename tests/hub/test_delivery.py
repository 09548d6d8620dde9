"""Finalised results leave the platform, with real components only: the platform's Orthanc (session
fixture ``orthanc``) holds a study and its reviewed SEG + SR; a second Orthanc acts as the hospital
PACS (its own account, URL prefix and DICOM port), reached by STOW-RS and by C-STORE; a real HTTP
receiver (:mod:`.webhook_receiver`) checks each webhook's signature and idempotency key. The
receiver is down, then answers 500, then comes up; the hospital PACS refuses; the delivery worker
is killed mid-send; an attending finalises a case with the review dashboard's model layer through
the platform API behind a real JupyterHub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import medimg_kernel as mk
from medimg_hub.access.audit import AuditLog
from medimg_hub.access.datasets import ingest_assigner, seed_datasets
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.delivery import DeliveryKind, DeliveryStatus, Outbox
from medimg_hub.delivery.outbox import DeliveryRecord
from medimg_hub.delivery.worker import READY_TEXT, DeliveryWorker
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.pipeline.service import TaskService
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (DatasetSettings, DeliverySettings, DestinationSettings, HubSettings, PacsSettings,
                                 PlatformSettings, QueueSettings, Settings, TasksSettings, WebhookSettings,
                                 dump_settings)
from medimg_kernel.client import DICOMwebHTTPClient
from medimg_kernel.pipeline import load_pipeline
from medimg_kernel.platform_client import PlatformClient
from medimg_kernel.review.case import ReviewCase
from medimg_kernel.seg import AlgorithmIdentification

from .hubfixture import REPO, PlatformHub, auth, make_study
from .webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = b"0123456789abcdef0123456789abcdef-webhook"
STOW, DIMSE, HOOK = "hospital-stow", "hospital-dimse", "ris"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """The hospital's PACS: an Orthanc of its own, with DICOMweb under /hospital/ and a DICOM port."""
    folder = tmp_path_factory.mktemp("hospital")
    pacs = OrthancServer(Settings(platform=PlatformSettings(var_dir=folder), pacs=PacsSettings(
        http_port=free_port(), dicom_port=free_port(), aet="HOSPITAL", dicomweb_root="/hospital/dicom-web/")))
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@dataclass
class Case:
    """A finalised review: the job, its study, the SEG and SR it stored, and the platform's settings."""

    settings: Settings
    job_id: str
    study: str
    seg: Any
    sr: Any

    def outbox(self) -> Outbox:
        return Outbox(make_engine(self.settings.database_url))

    def row(self, target: str) -> DeliveryRecord:
        return next(r for r in self.outbox().list_deliveries(job_id=self.job_id) if r.target == target)


def platform_settings(orthanc: OrthancServer, hospital: OrthancServer, folder: Path, receiver: WebhookReceiver,
                      password: str | None = None, called_aet: str = "HOSPITAL", max_attempts: int = 20) -> Settings:
    """The platform on ``orthanc``, exporting dataset ``radiology`` to the hospital by STOW-RS and
    C-STORE and announcing to ``receiver``; quick retries (0.2-0.5 s) so the test waits little."""
    creds = hospital.credentials()
    creds_file, key_file = folder / "hospital-pacs.json", folder / "ris-webhook.key"
    creds_file.write_text(json.dumps({"username": creds.username, "password": password or creds.password}))
    key_file.write_bytes(SECRET)
    for file in (creds_file, key_file):
        file.chmod(0o600)
    quick = {"backoff_s": 0.2, "max_backoff_s": 0.5, "max_attempts": max_attempts}
    return Settings(
        platform=PlatformSettings(var_dir=orthanc.settings.var_dir), pacs=orthanc.settings.pacs,
        tasks=TasksSettings(database_url=f"sqlite:///{folder / 'platform.db'}"),
        queue=QueueSettings(broker_url="memory://"),
        datasets=(DatasetSettings("radiology", "", "RADIOLOGY", read=("attendings",), review=("attendings",),
                                  finalise=("attendings",), export_to=(STOW, DIMSE), webhook=HOOK),),
        destinations=(DestinationSettings(name=STOW, url=hospital.dicomweb_url, auth="basic",
                                          credentials_file=str(creds_file), timeout_s=2.0, **quick),  # type: ignore[arg-type]
                      DestinationSettings(name=DIMSE, kind="dicom", host="127.0.0.1", port=hospital.settings.pacs.dicom_port,
                                          called_aet=called_aet, timeout_s=2.0, **quick)),  # type: ignore[arg-type]
        webhooks=(WebhookSettings(name=HOOK, url=receiver.url, secret_file=str(key_file), timeout_s=2.0, **quick),),  # type: ignore[arg-type]
        deliveries=DeliverySettings(poll_interval_s=0.1, lease_s=5.0), base_dir=folder)


def stored_review(orthanc: OrthancServer, key: str, model: bool = False) -> tuple[str, str, Any, Any]:
    """A small CT study in the platform PACS with a reviewed SEG and its SR, as the review dashboard stores
    them (``model``: the model's SEG and SR instead, as the pipeline's auto stage stores them)."""
    series = make_study("RADIOLOGY", f"delivery-{key}")
    client = orthanc.client()
    client.store_instances(series)
    study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    volume = mk.read_series(client, study, series_uid)
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[1:3, 8:20, 8:20] = 1
    if model:
        seg = mk.write_seg(volume, labels, ["liver"], type_id="organs",
                           algorithm=AlgorithmIdentification(name="organ-segmentation", version="7"))
    else:
        seg = mk.write_seg(volume, labels, ["liver"], type_id="organs", content_creator="ATTENDING^A")
    sr = mk.write_sr(seg, volume, labels, content_creator=None if model else "ATTENDING^A")
    client.store_instances([seg, sr])
    return study, series_uid, seg, sr


def review_job(settings: Settings, study: str, series_uid: str, produced: dict[str, Any] | None = None) -> str:
    """A run of example-echo on the study with its auto stage done (having ``produced`` these outputs
    besides the model's name and version): the review job waiting."""
    upgrade(settings.database_url)
    pipeline = load_pipeline(REPO / "notebooks" / "pipelines" / "example-echo" / "pipeline.yaml")
    with TaskStore(settings.database_url) as store:
        task = store.create_task(pipeline, {"series_instance_uid": series_uid}, owner="eve", dataset="radiology",
                                 study_instance_uid=study)
        echo = task.job("echo")
        assert store.execution.claim(echo.id, "test-worker") is not None
        store.execution.succeed(echo.id, "test-worker", {"model_name": "organs", "model_version": 7, **(produced or {})})
        return task.job("review").id


def final_outputs(seg: Any, sr: Any) -> dict[str, Any]:
    """What the review dashboard records with an attending's decision (medimg_kernel.review.case)."""
    return {"seg_sop_instance_uids": [str(seg.SOPInstanceUID)], "sr_sop_instance_uids": [str(sr.SOPInstanceUID)],
            "series_instance_uids": [str(seg.SeriesInstanceUID), str(sr.SeriesInstanceUID)], "review_time_s": 12.0}


def finalise(orthanc: OrthancServer, settings: Settings, key: str) -> Case:
    study, series_uid, seg, sr = stored_review(orthanc, key)
    job = review_job(settings, study, series_uid)
    with TaskStore(settings.database_url) as store:
        TaskService(settings, store).decide(job, "corrected", actor="alan", outputs=final_outputs(seg, sr))
    return Case(settings, job, study, seg, sr)


def drive(worker: DeliveryWorker, until: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Run the worker's passes until ``until()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "the deliveries did not get there in time"
        worker.run_once()
        time.sleep(0.05)


def in_hospital(hospital: OrthancServer, study: str) -> dict[str, str]:
    """SOP Instance UID → Modality of what the hospital PACS holds of ``study``."""
    found = hospital.client().search_for_instances(study, fields=["00080060"])
    return {i["00080018"]["Value"][0]: i.get("00080060", {}).get("Value", ["?"])[0] for i in found}


def instances_in_hospital(hospital: OrthancServer, study: str) -> int:
    return len(hospital.client().search_for_instances(study))


# --- the receiver down, then failing, then up ----------------------------------------------------------


def test_a_finalised_review_reaches_the_hospital_pacs_and_a_receiver_that_was_down(orthanc, hospital, tmp_path):
    receiver = WebhookReceiver(SECRET, free_port())  # not started: its port is closed
    settings = platform_settings(orthanc, hospital, tmp_path, receiver)
    case = finalise(orthanc, settings, "down-then-up")
    worker = DeliveryWorker(settings, case.outbox())
    try:
        drive(worker, lambda: case.row(HOOK).attempts >= 2)
        # the pushes went first, by STOW-RS and C-STORE; the hospital has the SEG and the SR, byte for byte
        assert case.row(STOW).status is DeliveryStatus.DELIVERED and case.row(DIMSE).status is DeliveryStatus.DELIVERED
        assert in_hospital(hospital, case.study) == {str(case.seg.SOPInstanceUID): "SEG", str(case.sr.SOPInstanceUID): "SR"}
        pushed = hospital.client().retrieve_instance(case.study, str(case.seg.SeriesInstanceUID), str(case.seg.SOPInstanceUID))
        assert pushed.PixelData == case.seg.PixelData and pushed.ContentCreatorName == "ATTENDING^A"
        # the webhook waits, pending, with the reason it failed
        down = case.row(HOOK)
        assert down.status is DeliveryStatus.PENDING and "Connection" in (down.last_error or "")
        receiver.mode = "fail"
        receiver.start()
        drive(worker, lambda: len(receiver.requests) >= 2)
        failing = case.row(HOOK)
        assert failing.status is DeliveryStatus.PENDING and "answered HTTP 500" in (failing.last_error or "")
        receiver.mode = "ok"
        drive(worker, lambda: case.row(HOOK).status is DeliveryStatus.DELIVERED)
    finally:
        receiver.stop()
        worker.close()
    # exactly one announcement acted on, the same idempotency key on every attempt, each signed afresh
    row = case.row(HOOK)
    assert [r.verdict for r in receiver.requests] == ["internal error", "internal error", "accepted"]
    assert {r.key for r in receiver.requests} == {row.idempotency_key} and list(receiver.accepted) == [row.idempotency_key]
    body = receiver.accepted[row.idempotency_key]
    assert body["event"] == "review.finalised" and body["job_id"] == case.job_id and body["decision"] == "corrected"
    assert body["dataset"] == "radiology" and body["pipeline"] == {"id": "example-echo", "version": "1.0"}
    assert body["model"] == {"name": "organs", "version": 7} and body["study_instance_uid"] == case.study
    assert body["seg"] == [{"sop_instance_uid": str(case.seg.SOPInstanceUID),
                            "series_instance_uid": str(case.seg.SeriesInstanceUID)}]
    assert body["sr"][0]["sop_instance_uid"] == str(case.sr.SOPInstanceUID)
    assert body["pushed_to"] == {STOW: "delivered", DIMSE: "delivered"}
    assert "PHANTOM" not in json.dumps(body) and "PID-" not in json.dumps(body)  # no patient attributes
    assert row.attempts >= 5 and row.delivered_at is not None
    audit = {r.action for r in AuditLog(make_engine(settings.database_url)).query(limit=100)}
    assert {"delivery.queued", "delivery.attempt", "delivery.delivered"} <= audit


# --- a hospital PACS that refuses ----------------------------------------------------------------------------


def _cli(settings_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "hub")])}
    return subprocess.run([sys.executable, "-m", "medimg_hub.cli.main", "--config", str(settings_file), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_a_refusing_pacs_leaves_the_results_pending_then_failed_and_a_retry_sends_them(orthanc, hospital, tmp_path):
    receiver = WebhookReceiver(SECRET, free_port())
    receiver.start()
    settings = platform_settings(orthanc, hospital, tmp_path, receiver, password="wrong", called_aet="NOT-HOSPITAL",
                                 max_attempts=2)
    case = finalise(orthanc, settings, "refused")
    worker = DeliveryWorker(settings, case.outbox())
    try:
        worker.run_once()
        stow, dimse = case.row(STOW), case.row(DIMSE)
        assert (stow.status, stow.attempts) == (DeliveryStatus.PENDING, 1) and "HTTP 401" in (stow.last_error or "")
        assert dimse.status is DeliveryStatus.PENDING and "rejected the association" in (dimse.last_error or "")
        assert receiver.requests == []  # the announcement waits for the pushes
        drive(worker, lambda: case.row(HOOK).status is DeliveryStatus.DELIVERED)
        assert case.row(STOW).status is DeliveryStatus.FAILED and case.row(DIMSE).status is DeliveryStatus.FAILED
        assert in_hospital(hospital, case.study) == {}  # nothing half-stored
        announced = receiver.accepted[case.row(HOOK).idempotency_key]
        assert announced["pushed_to"] == {STOW: "failed", DIMSE: "failed"}

        # the operator sees why, fixes the settings, and sends them again
        fixed = platform_settings(orthanc, hospital, tmp_path, receiver)
        settings_file = dump_settings(fixed, tmp_path / "medimg.toml")
        listed = _cli(settings_file, "deliveries", "list", "--failed")
        assert listed.returncode == 0, listed.stderr
        assert "HTTP 401" in listed.stdout and "rejected the association" in listed.stdout and STOW in listed.stdout
        for target in (STOW, DIMSE):
            retried = _cli(settings_file, "deliveries", "retry", str(case.row(target).id), "--actor", "ops")
            assert retried.returncode == 0 and "pending" in retried.stdout, retried.stderr
        pending = _cli(settings_file, "deliveries", "list", "--pending", "--json")
        assert {r["target"] for r in json.loads(pending.stdout)} == {STOW, DIMSE}
        worker = DeliveryWorker(fixed, case.outbox())
        drive(worker, lambda: all(case.row(t).status is DeliveryStatus.DELIVERED for t in (STOW, DIMSE)))
        assert set(in_hospital(hospital, case.study)) == {str(case.seg.SOPInstanceUID), str(case.sr.SOPInstanceUID)}
        unknown = _cli(settings_file, "deliveries", "retry", "424242")
        assert unknown.returncode == 1 and "no delivery with id 424242" in unknown.stderr
    finally:
        receiver.stop()
        worker.close()


def test_a_platform_pacs_that_cannot_give_the_results_leaves_them_pending(orthanc, hospital, tmp_path):
    receiver = WebhookReceiver(SECRET, free_port())
    settings = platform_settings(orthanc, hospital, tmp_path, receiver)
    case = finalise(orthanc, settings, "source-down")
    down = DICOMwebHTTPClient(f"http://127.0.0.1:{free_port()}/dicom-web")  # the platform's PACS, stopped
    worker = DeliveryWorker(settings, case.outbox(), source=down)
    worker.run_once()
    for target in (STOW, DIMSE):
        row = case.row(target)
        assert row.status is DeliveryStatus.PENDING and row.attempts == 1
        assert "platform PACS: cannot read seg" in (row.last_error or "") and "cannot reach" in (row.last_error or "")
    assert case.row(HOOK).attempts == 0 and in_hospital(hospital, case.study) == {}
    worker.close()


# --- the worker killed mid-send ------------------------------------------------------------------------------


def test_killing_the_delivery_worker_mid_send_loses_nothing_and_acts_once(orthanc, hospital, tmp_path):
    receiver = WebhookReceiver(SECRET, free_port(), mode="hang")  # takes the request, never answers
    receiver.start()
    settings = platform_settings(orthanc, hospital, tmp_path, receiver)
    settings_file = dump_settings(settings, tmp_path / "medimg.toml")
    case = finalise(orthanc, settings, "killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "hub")])}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "medimg_hub.cli.main", "--config", str(settings_file),
                                "--verbose", "deliveries", "run"], stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    try:
        assert receiver.arrived.wait(60), (tmp_path / "worker.log").read_text()[-3000:]
        os.killpg(process.pid, signal.SIGKILL)  # mid-send: the webhook's request is in flight
        process.wait(10)
        assert READY_TEXT in (tmp_path / "worker.log").read_text()
        hung = case.row(HOOK)
        assert hung.status is DeliveryStatus.PENDING and hung.attempts == 0 and hung.lease_owner is not None
        receiver.mode = "ok"
        worker = DeliveryWorker(settings, case.outbox(), owner="second-worker")
        assert worker.run_once() == 0  # the dead worker's lease still holds: not sent twice at once
        drive(worker, lambda: case.row(HOOK).status is DeliveryStatus.DELIVERED, timeout_s=30)
        worker.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        receiver.stop()
    key = case.row(HOOK).idempotency_key
    assert [r.key for r in receiver.requests] == [key, key]  # sent again after the lease lapsed...
    assert list(receiver.accepted) == [key]  # ...and acted on once
    assert case.row(STOW).status is DeliveryStatus.DELIVERED and case.row(DIMSE).status is DeliveryStatus.DELIVERED
    assert instances_in_hospital(hospital, case.study) == 2  # the SEG and the SR, once each


# --- through the platform API: an attending finalises in the review dashboard's model, an admin looks ---------


def test_a_case_finalised_through_the_platform_api_is_delivered_and_listed_for_admins(orthanc, hospital, tmp_path):
    """The real finalise path: the kernel's ReviewCase (as the viewer dashboard) stores the reviewed SEG and
    SR through the gateway and decides through the tasks API, as the attending, behind a real hub."""
    receiver = WebhookReceiver(SECRET, free_port())
    receiver.start()
    settings = replace(platform_settings(orthanc, hospital, tmp_path, receiver), hub=HubSettings(
        port=free_port(), api_port=free_port(), proxy_api_port=free_port(), platform_api_port=free_port(),
        spawner="shared"))
    study, series_uid, model_seg, model_sr = stored_review(orthanc, "through-the-api", model=True)
    job = review_job(settings, study, series_uid, final_outputs(model_seg, model_sr))
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    ingest_assigner(engine)(study, "RADIOLOGY")  # the study is in the dataset, as an import puts it
    hub = PlatformHub(tmp_path, settings, service_port=settings.hub.platform_api_port)
    try:
        hub.start()
        hub.add_user("alan", ("attendings",))
        hub.add_user("adam", ("admins",), admin=True)
        alan, adam = hub.new_token("alan"), hub.new_token("adam")
        session = requests.Session()
        session.headers.update(auth(alan))
        platform = PlatformClient(hub.platform_url, session)
        gateway = DICOMwebHTTPClient(f"{hub.platform_url}dicom-web", session=session)
        case = ReviewCase.open(platform, gateway, platform.review_job(job), reviewer="alan")
        case.decide("accepted")
        assert case.state == "decided"

        api = f"{hub.platform_url}api/"
        listed = requests.get(f"{api}deliveries", params={"status": "pending"}, headers=auth(adam), timeout=30).json()
        assert sorted(r["target"] for r in listed if r["job_id"] == job) == sorted([STOW, DIMSE, HOOK])
        reviewed = {i["role"]: i["sop_instance_uid"] for i in listed[0]["payload"]["instances"]}
        assert reviewed["seg"] != str(model_seg.SOPInstanceUID)  # the attending's SEG, not the model's
        assert requests.get(f"{api}deliveries", headers=auth(alan), timeout=30).status_code == 403
        assert requests.get(f"{api}deliveries", params={"status": "lost"}, headers=auth(adam),
                            timeout=30).status_code == 400
        outbox = Outbox(engine)
        worker = DeliveryWorker(settings, outbox)
        drive(worker, lambda: all(r.status is DeliveryStatus.DELIVERED for r in outbox.list_deliveries(job_id=job)))
        worker.close()
        rows = requests.get(f"{api}deliveries", params={"job_id": job}, headers=auth(adam), timeout=30).json()
        assert {(r["kind"], r["status"]) for r in rows} == {(DeliveryKind.DICOMWEB.value, "delivered"),
                                                           (DeliveryKind.DICOM.value, "delivered"),
                                                           (DeliveryKind.WEBHOOK.value, "delivered")}
        hook = next(r for r in rows if r["kind"] == "webhook")
        announced = receiver.accepted[hook["idempotency_key"]]
        assert announced["decision"] == "accepted" and announced["decided_by"] == "alan"
        assert announced["seg"][0]["sop_instance_uid"] == reviewed["seg"]
        held = in_hospital(hospital, study)
        assert held == {reviewed["seg"]: "SEG", reviewed["sr"]: "SR"}  # the reviewed results only
        pushed = hospital.client().retrieve_instance(study, announced["seg"][0]["series_instance_uid"], reviewed["seg"])
        assert pushed.ContentCreatorName == "alan^" and pushed.SeriesDescription == "organs"
        again = requests.post(f"{api}deliveries/{hook['id']}/retry", headers=auth(adam), timeout=30)
        assert again.status_code == 200 and again.json()["status"] == "delivered"  # a delivered one stays so
        assert requests.post(f"{api}deliveries/{hook['id']}/retry", headers=auth(alan), timeout=30).status_code == 403
        audit = requests.get(f"{api}audit", params={"action": "delivery.list"}, headers=auth(adam), timeout=30).json()
        assert {r["outcome"] for r in audit} == {"allowed", "denied"}
    finally:
        receiver.stop()
        hub.stop()
        engine.dispose()
