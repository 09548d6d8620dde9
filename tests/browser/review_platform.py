"""A running platform for the review browser tests: Orthanc, JupyterHub (+ proxy, platform API),
the demo logins, and one organ-segmentation case waiting for review.

The case is a 200-slice synthetic CT of site A with a "model" SEG and SR stored in the PACS and
the pipeline's segment stage completed with their UIDs. The model output is the phantom's
ground truth with the spleen eroded (so reviewers have something to correct); running the real
MONAI model here would only add minutes (it is exercised by tests/test_pipeline_e2e.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
from scipy import ndimage

from medimg_hub.demo.users import ensure_demo_users
from medimg_hub.servers.jupyterhub import JupyterHubServer
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.access.datasets import ingest_assigner, seed_datasets
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (HubSettings, PacsSettings, PlatformSettings, QueueSettings, Settings, TasksSettings,
                                 dump_settings, load_settings)
from medimg_hub.db.migrations import upgrade
from medimg_hub.db import make_engine
from medimg_hub.pipeline.store import TaskStore
from medimg_kernel.phantom import make_phantom
from medimg_kernel.phantom import DEFAULT_SITES
from medimg_kernel.sr import write_sr
from medimg_kernel.seg import AlgorithmIdentification, write_seg
from medimg_kernel.series import read_series
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume

REPO = Path(__file__).resolve().parents[2]
N_SLICES = 200
SEGMENTS = ["liver", "spleen", "kidney"]


@dataclass
class ReviewPlatform:
    settings: Settings
    url: str
    passwords: dict[str, str]
    pacs: OrthancServer
    engine: Any
    study: str
    series: str
    job_id: str
    model_labels: np.ndarray


def _case_files(folder: Path) -> tuple[list[Path], Any, np.ndarray]:
    site = dataclasses.replace(DEFAULT_SITES[0], n_slices=N_SLICES, slice_spacing_mm=1.5)
    ct, truth = make_phantom(site, seed=11)
    patient = SyntheticPatient("REVIEW-001", "PHANTOM^REVIEW", "1.2.826.0.1.3680043.8.498.7711", institution_name=site.institution_name)
    series = ct_series_from_volume(ct, patient, uid_entropy=["review-e2e"])
    paths = []
    for i, ds in enumerate(series):
        path = folder / f"ct-{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    labels = np.asarray(truth.array, dtype=np.uint8)
    spleen = labels == 2
    labels[spleen & ~ndimage.binary_erosion(spleen, iterations=2)] = 0  # the "model" misses the spleen's rim
    return paths, series, labels


def _submit(url: str, token: str, study: str, series: str) -> str:
    body = {"pipeline": "organ-segmentation", "dataset": "site-a",
            "parameters": {"study_instance_uid": study, "series_instance_uid": series}}
    response = requests.post(f"{url}/services/platform/api/tasks", json=body, timeout=60,
                             headers={"Authorization": f"token {token}"})
    assert response.status_code == 201, response.text
    return str(response.json()[0]["id"])


@contextmanager
def running_review_platform(root: Path) -> Iterator[ReviewPlatform]:
    """Start everything, make the case, yield; stop everything (also on failure)."""
    built = Settings(
        platform=PlatformSettings(var_dir=root / "var", start_timeout_s=60.0),
        pacs=PacsSettings(http_port=free_port()),
        queue=QueueSettings(broker_url="memory://"),  # no workers: the segment stage is completed below
        tasks=TasksSettings(database_url=f"sqlite:///{root / 'var' / 'platform.db'}"),
        hub=dataclasses.replace(HubSettings(), port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
                                platform_api_port=free_port(), spawner="shared", homes_dir=root / "homes"),
    )
    settings = load_settings(dump_settings(built, root / "settings.toml"))
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    pacs, hub = OrthancServer(settings), JupyterHubServer(settings)
    try:
        pacs.start()
        (root / "case").mkdir()
        paths, series, model_labels = _case_files(root / "case")
        client = pacs.client()
        ingest_files(client, paths, assign=ingest_assigner(engine))
        study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        volume = read_series(client, study, series_uid)
        seg = write_seg(volume, model_labels, SEGMENTS, type_id="organs",
                        algorithm=AlgorithmIdentification(name="organ-segmentation", version="7"))
        sr = write_sr(seg, volume, model_labels)
        client.store_instances([seg, sr])
        passwords = ensure_demo_users(settings)
        hub.start()
        url = f"http://127.0.0.1:{settings.hub.port}"
        token = _engineer_token(url, passwords["engineer1"])
        task_id = _submit(url, token, study, series_uid)
        store = TaskStore(settings.database_url)
        try:
            segment = store.get_task(task_id).job("segment")
            assert store.execution.claim(segment.id, "test-worker") is not None
            store.execution.succeed(segment.id, "test-worker", {
                "seg_sop_instance_uids": [str(seg.SOPInstanceUID)], "sr_sop_instance_uids": [str(sr.SOPInstanceUID)],
                "series_instance_uids": [str(seg.SeriesInstanceUID), str(sr.SeriesInstanceUID)],
                "model_name": "organ-segmentation", "model_version": 7})
            job_id = store.get_task(task_id).job("review").id
        finally:
            store.close()
        yield ReviewPlatform(settings, url, passwords, pacs, engine, study, series_uid, job_id, model_labels)
    finally:
        hub.stop()
        pacs.stop()
        engine.dispose()


def _engineer_token(url: str, password: str) -> str:
    from tests.hub.hubproc import Hub, HubBrowser

    browser = HubBrowser(Hub(None, url, {}, Path()))  # type: ignore[arg-type]
    assert browser.logged_in(browser.login("engineer1", password))
    return browser.new_token("engineer1")
