"""``medimg pacs pull``: a cohort from a hospital's PACS (a second, real Orthanc) into a dataset of the
platform's PACS, de-identified at the door: new UIDs and pseudonyms, the checker clean, dciodvfy clean,
nothing of the originals in the research PACS; resumable; a study that would keep an identifier is
refused whole; a remote that does not answer is a clear error."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from medimg_hub.access.datasets import DatasetDirectory, seed_datasets
from medimg_hub.cli.intake import pacs_group
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.pacs.pull import load_job
from medimg_hub.servers.process import free_port
from medimg_hub.settings import DatasetSettings, PacsSettings, PlatformSettings, RemoteSettings, Settings, TasksSettings
from medimg_kernel.deid import find_identifying
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume

from .test_external_pacs import hospital_pacs

pytestmark = pytest.mark.integration

#: Made-up identifiers of the hospital's (synthetic) patients.
PATIENTS = {"RES001": "DOE^JANE", "RES002": "ROE^RICHARD"}


@dataclass
class Pull:
    settings: Settings
    hospital: OrthancServer
    research: OrthancServer
    originals: dict[str, str]  # PatientID → original StudyInstanceUID


def _settings(folder: Path, hospital: OrthancServer, remote_url: str | None = None) -> Settings:
    creds = hospital.credentials()
    (folder / "hospital.json").write_text(json.dumps({"username": creds.username, "password": creds.password}))
    return Settings(platform=PlatformSettings(var_dir=folder / "var"), pacs=PacsSettings(http_port=free_port()),
                    tasks=TasksSettings(database_url=f"sqlite:///{folder / 'platform.db'}"),
                    datasets=(DatasetSettings("trial-7", "", ""),),
                    remotes=(RemoteSettings("hospital", remote_url or hospital.dicomweb_url, "basic",
                                            str(folder / "hospital.json")),))


@pytest.fixture(scope="module")
def pull(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pull]:
    folder = tmp_path_factory.mktemp("pull")
    hospital = hospital_pacs(folder / "hospital-var")
    settings = _settings(folder, hospital)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    engine.dispose()
    research = OrthancServer(settings)
    hospital.start()
    research.start()
    try:
        import numpy as np

        originals = {}
        for patient_id, name in PATIENTS.items():
            patient = SyntheticPatient(patient_id, name, generate_uid(), accession_number="ACC" + patient_id[-3:],
                                       institution_name="St Elsewhere Hospital", patient_birth_date="19700101")
            series = ct_series_from_volume(Volume(np.full((3, 16, 16), 40, np.int16), (2.0, 1.0, 1.0)), patient)
            hospital.client().store_instances(series)
            originals[patient_id] = str(series[0].StudyInstanceUID)
        yield Pull(settings, hospital, research, originals)
    finally:
        research.stop()
        hospital.stop()


def test_a_cohort_arrives_de_identified_in_its_dataset_and_a_resumed_pull_adds_nothing(pull, tmp_path):
    runner = CliRunner()
    result = runner.invoke(pacs_group, ["pull", "--from", "hospital", "--query", "PatientID=RES*", "--dataset",
                                        "trial-7"], obj=pull.settings, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 of 2 studies pulled into trial-7" in result.output
    job_id = result.output.split()[1].rstrip(":")
    job = load_job(pull.settings, job_id)
    assert set(job.studies) == set(pull.originals.values()) and set(job.studies.values()) == {"done"}

    research = pull.research.client()
    stored = [s["0020000D"]["Value"][0] for s in research.search_for_studies()]
    assert sorted(stored) == sorted(job.stored_as.values())
    assert not set(stored) & set(pull.originals.values())  # the original UIDs never reach the research PACS
    directory = DatasetDirectory(make_engine(pull.settings.database_url), ttl_s=0)
    assert {directory.dataset_of(uid) for uid in stored} == {"trial-7"}
    for uid in stored:
        for series in research.search_for_series(uid):
            for ds in research.retrieve_series(uid, series["0020000E"]["Value"][0]):
                assert find_identifying(ds) == []
                assert str(ds.PatientName) not in PATIENTS.values() and str(ds.PatientID) not in PATIENTS
                assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
                path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(path, enforce_file_format=True)
    verdict = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert "Error" not in verdict.stdout + verdict.stderr, verdict.stderr

    count = len(research.search_for_instances(stored[0]))
    again = runner.invoke(pacs_group, ["pull", "--resume", job_id], obj=pull.settings, catch_exceptions=False)
    assert again.exit_code == 0 and "2 of 2 studies pulled" in again.output
    assert len(research.search_for_instances(stored[0])) == count
    from medimg_hub.access.audit import AuditLog

    audited = AuditLog(make_engine(pull.settings.database_url)).query(action="pull")
    assert {r.study_instance_uid for r in audited} == set(stored)  # the new UIDs; the originals stay in the job file
    state = pull.settings.var_dir / "pulls" / f"{job_id}.json"
    assert state.stat().st_mode & 0o077 == 0  # the UID mapping stays with the hub


def test_a_study_that_would_keep_an_identifier_is_refused_whole_and_a_resume_retries_it(pull):
    """An attribute Table E.1-1 does not list (SecondaryReviewerName, a person's name) survives the
    de-identification: the checker catches it and nothing of that study is stored."""
    import numpy as np

    patient = SyntheticPatient("LEAK01", "LEAK^PATIENT", generate_uid())
    series = ct_series_from_volume(Volume(np.full((2, 8, 8), 0, np.int16), (2.0, 1.0, 1.0)), patient)
    for ds in series:
        ds.SecondaryReviewerName = "DR^WHO"  # not in PS3.15 Table E.1-1 (2026c)
        ds.ScheduledPerformingPhysicianName = "DR^NO"  # in the table (X): removed, not a reason to refuse
    pull.hospital.client().store_instances(series)
    result = CliRunner().invoke(pacs_group, ["pull", "--from", "hospital", "--query", "PatientID=LEAK*", "--dataset",
                                             "trial-7"], obj=pull.settings, catch_exceptions=False)
    assert result.exit_code == 1
    assert "would keep identifiers" in result.output and "SecondaryReviewerName" in result.output
    assert "ScheduledPerformingPhysicianName" not in result.output
    assert "resume with: medimg pacs pull --resume" in result.output
    before = {s["0020000D"]["Value"][0] for s in pull.research.client().search_for_studies()}
    assert not any("LEAK" in str(s) for s in pull.research.client().search_for_studies(fields=["00100020"]))
    assert len(before) == 2


def test_a_remote_that_does_not_answer_is_a_clear_error(pull, tmp_path):
    settings = _settings(tmp_path, pull.hospital, remote_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    result = CliRunner().invoke(pacs_group, ["pull", "--from", "hospital", "--query", "PatientID=RES*", "--dataset",
                                             "trial-7"], obj=settings)
    assert result.exit_code != 0 and "cannot reach the DICOMweb server" in str(result.exception)
    unknown = CliRunner().invoke(pacs_group, ["pull", "--from", "clinic", "--query", "PatientID=*", "--dataset",
                                              "trial-7"], obj=settings)
    assert "no [[remotes]] table is called 'clinic'; known: ['hospital']" in str(unknown.exception)
