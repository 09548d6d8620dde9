"""The organ-segmentation pipeline end to end through real processes: Orthanc, Redis, the
MLflow server and registry, the dispatcher, a Celery worker running papermill kernels.

Several demo studies are submitted; each run must leave a model SEG and an SR in the PACS that
reference the right series, wait for review, and be traceable task → executed notebook →
SOP Instance UIDs → MLflow run → registered model version. The task store is SQLite, then PostgreSQL;
then the PACS is a hospital's by URL (``[pacs] url``: another Orthanc with its own account and URL prefix,
not started by the platform)."""

from __future__ import annotations

import time

import nbformat
import pytest
import requests

from medimg_kernel.phantom.demo import generate_demo
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.tracking.server import credentials as mlflow_credentials
from medimg_hub.servers.process import free_port
from medimg_hub.stack import platform_services
from medimg_hub.settings import (
    DemoSettings, MlflowSettings, PacsSettings, PlatformSettings, QueueSettings, Settings, TasksSettings,
)
from medimg_hub.db.migrations import upgrade
from medimg_hub.pipeline.service import RunTarget, TaskService, resolve_targets
from medimg_kernel.model import SegmentationModelConfig
from medimg_kernel.registry import ensure_segmentation_model
from medimg_kernel.sr import read_sr_report
from medimg_kernel.seg import describe_seg
from medimg_hub.pacs.connection import pacs_connection
from tests.hub.postgres import PostgresServer, postgres_available
from tests.hub.test_external_pacs import external_pacs_settings, hospital_pacs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A tiny network: this test is about the seams, not about Dice (benchmarks/train_quality.py is).
TINY = SegmentationModelConfig(channels=(8, 16), strides=(2,), num_res_units=0, roi_size=(32, 32, 32))


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "external"])
def platform(request, tmp_path_factory):
    """Every service as a real process, demo studies in the PACS, a tiny registered model."""
    var_dir = tmp_path_factory.mktemp(f"e2e-{request.param}")
    postgres = hospital = None
    pacs_settings = PacsSettings(http_port=free_port())
    if request.param == "external":
        hospital = hospital_pacs(var_dir / "hospital")
        hospital.start()
        pacs_settings = external_pacs_settings(hospital, var_dir)
    database_url = f"sqlite:///{var_dir}/platform.db"
    if request.param == "postgresql":
        if reason := postgres_available():
            pytest.skip(reason)
        postgres = PostgresServer()
        postgres.start()
        database_url = postgres.create_database()
    settings = Settings(
        platform=PlatformSettings(var_dir=var_dir),
        pacs=pacs_settings,
        mlflow=MlflowSettings(port=free_port(), backend_store_uri=f"sqlite:///{var_dir}/mlflow.db",
                              artifacts_dir=var_dir / "artifacts"),
        queue=QueueSettings(redis_port=free_port(), worker_groups=("segmentation",), dispatch_interval_s=0.5),
        tasks=TasksSettings(database_url=database_url, heartbeat_s=1.0, stale_after_s=5.0),
        demo=DemoSettings(n_sites=3, studies_per_site=1),
    )
    upgrade(settings.database_url)
    services = platform_services(settings, hub=False)  # no logins needed (the hub would want its own ports)
    try:
        for service in services:
            service.start()
        manifest = generate_demo(var_dir / "demo", n_sites=3, studies_per_site=1, seed=5)
        pacs = pacs_connection(settings)
        ingest_files(pacs.client(), [var_dir / "demo" / f for s in manifest.studies for f in s.files])
        loaded, trained = ensure_segmentation_model(pacs.client(), settings.mlflow_tracking_uri, config=TINY,
                                                    epochs=1, holdout=0.34)
        assert trained
        yield settings, manifest, loaded
    finally:
        for service in reversed(services):
            service.stop()
        if postgres is not None:
            postgres.stop()
        if hospital is not None:
            hospital.stop()


def _wait_all(service, task_ids, predicate, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tasks = [service.task(t) for t in task_ids]
        if all(predicate(t) for t in tasks):
            return tasks
        time.sleep(0.5)
    raise AssertionError(f"runs not done in {timeout_s} s: {[(t.id, t.status.value) for t in tasks]}")


def test_cohort_runs_store_seg_and_sr_with_lineage(platform):
    settings, manifest, loaded = platform
    client = pacs_connection(settings).client()
    if settings.pacs.url:  # the hospital's PACS: the platform configured no Orthanc of its own
        assert "/hospital/dicom-web" in client.url and not (settings.var_dir / "orthanc").exists()
    service = TaskService(settings)
    studies = [s.study_instance_uid for s in manifest.studies]
    targets = resolve_targets(client, studies, {"Modality": "CT"})
    assert [t.series_instance_uid for t in targets] == [s.series_instance_uid for s in manifest.studies]
    submitted = service.submit("organ-segmentation", {}, owner="engineer1", targets=targets)
    tasks = _wait_all(service, [t.id for t in submitted], lambda t: t.status.value in ("waiting_review", "failed"))

    registry = requests.get(f"{settings.mlflow_tracking_uri}/api/2.0/mlflow/model-versions/get",
                            params={"name": "organ-segmentation", "version": str(loaded.version)}, timeout=10,
                            auth=mlflow_credentials(settings)).json()
    for task in tasks:
        segment, review = task.jobs
        assert segment.status.value == "succeeded", segment.error
        assert review.status.value == "waiting_review"
        out = segment.outputs
        [seg] = client.search_for_instances(task.study_instance_uid,
                                            search_filters={"SOPInstanceUID": out["seg_sop_instance_uids"][0]})
        seg_ds = client.retrieve_instance(task.study_instance_uid, seg["0020000E"]["Value"][0],
                                          out["seg_sop_instance_uids"][0])
        info = describe_seg(seg_ds)
        assert info.is_model and str(seg_ds.SeriesDescription) == "model_organs"
        assert info.source_series_instance_uids == (task.series_instance_uid,)
        assert info.algorithm.version == str(out["model_version"]) == str(loaded.version)
        [sr] = client.search_for_instances(task.study_instance_uid,
                                           search_filters={"SOPInstanceUID": out["sr_sop_instance_uids"][0]})
        sr_ds = client.retrieve_instance(task.study_instance_uid, sr["0020000E"]["Value"][0], out["sr_sop_instance_uids"][0])
        report = read_sr_report(sr_ds)
        assert report.segmentation_sop_instance_uid == out["seg_sop_instance_uids"][0]
        assert report.source_series_instance_uid == task.series_instance_uid

        executed = nbformat.read(out["executed_notebook"], 4)
        injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert task.series_instance_uid in injected.source
        run = requests.get(f"{settings.mlflow_tracking_uri}/api/2.0/mlflow/runs/get",
                           params={"run_id": out["mlflow_run_id"]}, timeout=10, auth=mlflow_credentials(settings)).json()["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["medimg.task_id"] == task.id and tags["medimg.model_version"] == str(loaded.version)
        assert out["model_run_id"] == registry["model_version"]["run_id"]

    decided = service.decide(tasks[0].jobs[1].id, "accepted", actor="attending1")
    assert decided.status.value == "accepted" and service.task(tasks[0].id).status.value == "succeeded"
    service.close()


def test_a_series_that_fails_to_load_fails_its_job_with_the_reason(platform):
    settings, manifest, _ = platform
    client = pacs_connection(settings).client()
    before = len(client.search_for_instances(manifest.studies[0].study_instance_uid))
    service = TaskService(settings)
    [task] = service.submit("organ-segmentation", {}, owner="engineer1",
                            targets=[RunTarget(manifest.studies[0].study_instance_uid, "1.2.3.999")])
    [task] = _wait_all(service, [task.id], lambda t: t.status.value == "failed")
    assert "NotFoundError" in task.jobs[0].error and "1.2.3.999" in task.jobs[0].error
    assert task.jobs[0].attempts == 1
    assert len(client.search_for_instances(manifest.studies[0].study_instance_uid)) == before
    service.close()


def test_a_study_a_scanner_pushes_is_routed_run_and_reviewed_in_its_dataset_only(platform, tmp_path):
    """storescu (a scanner, calling AE CT7) → the receiver's [[routes]] rule names site-b → the
    pipeline runs on it → its review waits in site-b's worklist and in no other dataset's."""
    import dataclasses
    import subprocess

    from medimg_hub.access.datasets import DatasetDirectory, seed_datasets
    from medimg_hub.access.identities import Identity
    from medimg_hub.db import make_engine
    from medimg_hub.pacs.receiver import Receiver
    from medimg_hub.review.access import ReviewAccess
    from medimg_hub.settings import ReceiverSettings, RouteSettings

    settings, _, _ = platform
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    directory = DatasetDirectory(engine, ttl_s=0)
    routed = dataclasses.replace(
        settings, receiver=ReceiverSettings(port=free_port(), senders=("CT7@127.0.0.1",), forward_interval_s=0.2),
        routes=(RouteSettings("site-b", calling_aet="CT7"),))  # by sender, whatever the InstitutionName says
    scan = generate_demo(tmp_path / "scan", n_sites=1, studies_per_site=1, seed=99).studies[0]
    client = pacs_connection(settings).client()
    receiver = Receiver(routed, client)
    receiver.start()
    try:
        sent = subprocess.run(["storescu", "-aet", "CT7", "-aec", "MEDIMG", "+sd", "127.0.0.1",
                               str(routed.receiver.port), str(tmp_path / "scan" / scan.ct_dir)],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 30
        while (len(client.search_for_instances(scan.study_instance_uid)) < scan.n_instances
               or directory.dataset_of(scan.study_instance_uid) is None) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        receiver.stop()
    assert directory.dataset_of(scan.study_instance_uid) == "site-b"

    service = TaskService(settings)
    targets = resolve_targets(client, [scan.study_instance_uid], {"Modality": "CT"})
    [task] = service.submit("organ-segmentation", {}, owner="engineer1", targets=targets, dataset="site-b")
    [task] = _wait_all(service, [task.id], lambda t: t.status.value in ("waiting_review", "failed"))
    assert task.status.value == "waiting_review", task.jobs[0].error
    review = ReviewAccess(service, directory, engine, settings.review)
    waiting = {site: {i["job_id"] for i in review.worklist(Identity(f"reviewer-{site}", "user", (site,), False, frozenset()))}
               for site in ("site-a", "site-b", "site-c")}
    assert task.jobs[1].id in waiting["site-b"]
    assert task.jobs[1].id not in waiting["site-a"] | waiting["site-c"]
    service.close()
    engine.dispose()
