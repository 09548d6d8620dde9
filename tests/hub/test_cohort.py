"""Cohorts that work: the README's cohort command, wildcards, date ranges, series-level attributes
and values with spaces, exactly, on a real Orthanc directly (the hub side) and through the
platform's DICOMweb gateway (a kernel's path), and a query that matches nothing queues nothing.
Last, an engineer's import from a kernel into a dataset they may write (and not another).

Orthanc 1.10 matches ``%2A`` as a literal asterisk and no value with a space at all; a decoy
institution differs from the real one only where a space is, so an answer that is merely
approximate (``?`` in place of the space) would include it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from medimg_hub.access.datasets import ingest_assigner, seed_datasets
from medimg_hub.cli.tasks import tasks as tasks_cli
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.pipeline.service import TaskService
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (DatasetSettings, HubSettings, PacsSettings, PlatformSettings, QueueSettings,
                                 Settings, TasksSettings)
from medimg_kernel import find_studies
from medimg_kernel.client import DICOMwebHTTPClient
from medimg_kernel.importer import import_files
from medimg_kernel.qido import QueryError
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume

from .hubfixture import PlatformHub, auth

pytestmark = pytest.mark.integration

NORTH = "Northfield General Hospital (synthetic)"
DECOY = "Northfield-General Hospital (synthetic)"  # one character off, where NORTH has a space
#: key → (institution, PatientID, StudyDate)
PLAN = {"n1": (NORTH, "NF001", dt.date(2021, 3, 1)), "n2": (NORTH, "NF002", dt.date(2022, 3, 1)),
        "d1": (DECOY, "ND001", dt.date(2022, 3, 1)), "s1": ("SITEC", "SC001", dt.date(2022, 3, 1))}
DATASETS = (DatasetSettings("north", "", NORTH, read=("engineers",), write=("engineers",)),
            DatasetSettings("decoy", "", DECOY, read=("engineers",)),
            DatasetSettings("south", "", "SITEC", read=("others",)))


@dataclass
class Cohorts:
    settings: Settings
    studies: dict[str, str]
    direct: DICOMwebHTTPClient
    gateway: DICOMwebHTTPClient
    hub: PlatformHub
    token: str


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohorts]:
    folder = tmp_path_factory.mktemp("cohorts")
    settings = Settings(
        platform=PlatformSettings(var_dir=folder / "var"), pacs=PacsSettings(http_port=free_port()),
        tasks=TasksSettings(database_url=f"sqlite:///{folder / 'platform.db'}"),
        queue=QueueSettings(broker_url="memory://"), datasets=DATASETS,
        hub=HubSettings(port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
                        platform_api_port=free_port(), spawner="shared"))
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    pacs = OrthancServer(settings)
    hub = PlatformHub(folder, settings, service_port=settings.hub.platform_api_port)
    try:
        pacs.start()
        studies, paths = {}, []
        for key, (institution, patient_id, date) in PLAN.items():
            uid = f"1.2.826.0.1.3680043.8.498.7{abs(hash(key)) % 10**12}"
            patient = SyntheticPatient(patient_id, f"COHORT^{key.upper()}", uid, institution_name=institution,
                                       study_date=date)
            volume = Volume(np.zeros((2, 8, 8), np.int16), (2.0, 1.0, 1.0))
            for i, ds in enumerate(ct_series_from_volume(volume, patient, uid_entropy=[key])):
                paths.append(folder / f"{key}-{i}.dcm")
                ds.save_as(paths[-1], enforce_file_format=True)
            studies[key] = uid
        ingest_files(pacs.client(), paths, assign=ingest_assigner(engine))
        hub.start()
        hub.add_user("eve", ("engineers",), False)
        token = hub.new_token("eve")
        session = requests.Session()
        session.headers.update(auth(token))
        yield Cohorts(settings, studies, pacs.client(), DICOMwebHTTPClient(f"{hub.platform_url}dicom-web",
                                                                           session=session), hub, token)
    finally:
        hub.stop()
        pacs.stop()
        engine.dispose()


@pytest.fixture(params=["orthanc", "gateway"])
def client(request: pytest.FixtureRequest, cohorts: Cohorts) -> DICOMwebHTTPClient:
    return cohorts.direct if request.param == "orthanc" else cohorts.gateway


def _keys(cohorts: Cohorts, uids: list[str]) -> list[str]:
    by_uid = {uid: key for key, uid in cohorts.studies.items()}
    return sorted(by_uid[u] for u in uids)


@pytest.mark.parametrize(("query", "expected"), [
    ({"InstitutionName": NORTH}, ["n1", "n2"]),  # spaces and parentheses, exactly: not the decoy
    ({"InstitutionName": DECOY}, ["d1"]),
    ({"InstitutionName": "Northfield General Hospital"}, []),  # no partial matches without a wildcard
    ({"PatientID": "NF*"}, ["n1", "n2"]),  # a wildcard is a wildcard (Orthanc took %2A literally)
    ({"PatientID": "N?00?"}, ["d1", "n1", "n2"]),
    ({"InstitutionName": "Northfield*", "StudyDate": "20220101-20221231"}, ["d1", "n2"]),  # date range
    ({"StudyDate": "-20211231"}, ["n1"]),
    ({"Modality": "CT", "InstitutionName": NORTH}, ["n1", "n2"]),  # series level, with a study attribute
    ({"SeriesDescription": "CT ABDOMEN", "PatientID": "S*"}, ["s1"]),  # series level, a space
    ({"ModalitiesInStudy": "MR"}, []),
    ({"Modality": "MR"}, []),
])
def test_cohort_queries_match_exactly(cohorts, client, query, expected):
    if client is cohorts.gateway:  # the engineer is not granted the south dataset
        expected = [k for k in expected if k != "s1"]
    assert _keys(cohorts, find_studies(client, query)) == expected


def test_an_unknown_attribute_is_refused_by_name(cohorts, client):
    with pytest.raises(QueryError, match="'Hospital' is not a DICOM attribute"):
        find_studies(client, {"Hospital": "x"})


def test_the_gateway_answers_a_raw_qido_with_spaces_exactly_and_returns_the_attribute(cohorts):
    url = f"{cohorts.hub.platform_url}dicom-web/studies?InstitutionName=Northfield%20General%20Hospital%20(synthetic)"
    items = requests.get(url, headers=auth(cohorts.token), timeout=30).json()
    assert _keys(cohorts, [i["0020000D"]["Value"][0] for i in items]) == ["n1", "n2"]
    assert {i["00080080"]["Value"][0] for i in items} == {NORTH}
    wildcard = requests.get(f"{cohorts.hub.platform_url}dicom-web/studies?PatientID=NF%2A", headers=auth(cohorts.token),
                            timeout=30).json()  # a client that percent-encodes the wildcard
    assert len(wildcard) == 2
    paged = [requests.get(url + f"&limit=1&offset={o}", headers=auth(cohorts.token), timeout=30).json()
             for o in (0, 1, 2)]
    assert [len(p) for p in paged] == [1, 1, 0]


def test_the_readme_cohort_command_queues_its_studies_and_an_empty_cohort_queues_nothing(cohorts):
    runner = CliRunner()
    service = TaskService(cohorts.settings)
    try:
        before = len(service.list_tasks(limit=1000))
        result = runner.invoke(tasks_cli, ["submit", "organ-segmentation", "--query", f"InstitutionName={NORTH}"],
                               obj=cohorts.settings, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        queued = service.list_tasks(limit=1000)
        assert len(queued) == before + 2
        assert _keys(cohorts, [t.study_instance_uid for t in queued[:2]]) == ["n1", "n2"]

        result = runner.invoke(tasks_cli, ["submit", "organ-segmentation", "--query", "InstitutionName=Nowhere General"],
                               obj=cohorts.settings)
        assert result.exit_code == 1
        assert "no study matches InstitutionName='Nowhere General'; nothing was queued" in result.output
        result = runner.invoke(tasks_cli, ["submit", "organ-segmentation", "--query", "Hospital=x"], obj=cohorts.settings)
        assert result.exit_code == 2 and "'Hospital' is not a DICOM attribute" in result.output
        assert len(service.list_tasks(limit=1000)) == before + 2
    finally:
        service.close()


def test_the_readme_names_the_command_this_test_runs():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f'medimg tasks submit organ-segmentation --query "InstitutionName={NORTH}"' in readme


def test_an_engineer_imports_a_folder_into_a_dataset_they_may_write_and_no_other(cohorts, tmp_path):
    from tests.series_factory import small_ct_series

    mine, theirs = small_ct_series(seed=61), small_ct_series(seed=62)
    for name, series in (("mine", mine), ("theirs", theirs)):
        (tmp_path / name).mkdir()
        for i, ds in enumerate(series):
            ds.save_as(tmp_path / name / f"{i}.dcm", enforce_file_format=True)
    report = import_files(cohorts.gateway, [tmp_path / "mine"], dataset="north")
    assert report.instances_stored == len(mine) and not report.skipped
    study = str(mine[0].StudyInstanceUID)
    assert len(cohorts.gateway.search_for_instances(study)) == len(mine)  # readable at once, through the gateway
    assert import_files(cohorts.gateway, [tmp_path / "mine"], dataset="north").instances_stored == 0

    refused = import_files(cohorts.gateway, [tmp_path / "theirs"], dataset="decoy")  # read, but no write grant
    assert refused.instances_stored == 0 and len(refused.skipped) == len(theirs)
    assert all("HTTP 403" in s.reason for s in refused.skipped), refused.skipped
    assert cohorts.direct.search_for_instances(str(theirs[0].StudyInstanceUID)) == []  # nothing stored
