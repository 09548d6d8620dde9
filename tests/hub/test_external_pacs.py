"""The platform against a hospital's DICOMweb PACS by URL (``[pacs] url``): a second, independently
configured Orthanc (its own account, another URL prefix, DICOMweb only) that the platform did not
start. The gateway's QIDO/WADO/STOW and a kernel's import go to it with the platform's credentials;
wrong credentials and a PACS that is down give clear errors. (The pipeline against it:
``tests/test_pipeline_e2e.py``, parameter ``external``.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from medimg_hub.access.datasets import sync_datasets
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.connection import pacs_connection
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (DatasetSettings, HubSettings, PacsSettings, PlatformSettings, QueueSettings,
                                 Settings, TasksSettings, load_settings)
from medimg_kernel.client import ACCEPT_STORED, DICOMwebHTTPClient
from medimg_kernel.errors import AccessDeniedError, ConfigurationError, DICOMwebError
from medimg_kernel.importer import import_files
from tests.series_factory import small_ct_series

from .hubfixture import PlatformHub, auth

pytestmark = pytest.mark.integration

HOSPITAL_ROOT = "/hospital/dicom-web/"


def hospital_pacs(folder: Path) -> OrthancServer:
    """The hospital's PACS: an Orthanc of its own (its account, its URL prefix), not the platform's."""
    return OrthancServer(Settings(platform=PlatformSettings(var_dir=folder),
                                  pacs=PacsSettings(http_port=free_port(), dicomweb_root=HOSPITAL_ROOT)))


def external_pacs_settings(hospital: OrthancServer, folder: Path, **more: object) -> PacsSettings:
    """``[pacs]`` of a platform that uses ``hospital`` by URL, with a copy of its credentials (0600)."""
    creds = hospital.credentials()
    file = folder / "hospital-pacs.json"
    file.write_text(json.dumps({"username": creds.username, "password": creds.password}))
    file.chmod(0o600)
    return PacsSettings(url=hospital.dicomweb_url, auth="basic", credentials_file=str(file), **more)  # type: ignore[arg-type]


@dataclass
class Hospital:
    pacs: OrthancServer
    settings: Settings
    hub: PlatformHub
    token: str


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    folder = tmp_path_factory.mktemp("hospital")
    pacs = hospital_pacs(folder / "hospital-var")
    settings = Settings(
        platform=PlatformSettings(var_dir=folder / "var"), pacs=external_pacs_settings(pacs, folder),
        tasks=TasksSettings(database_url=f"sqlite:///{folder / 'platform.db'}"), queue=QueueSettings(broker_url="memory://"),
        datasets=(DatasetSettings("radiology", "", "TEST SITE", read=("engineers",), write=("engineers",)),),
        hub=HubSettings(port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
                        platform_api_port=free_port(), spawner="shared"))
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sync_datasets(engine, settings.datasets)
    engine.dispose()
    hub = PlatformHub(folder, settings, service_port=settings.hub.platform_api_port)
    try:
        pacs.start()
        hub.start()
        hub.add_user("eve", ("engineers",))
        yield Hospital(pacs, settings, hub, hub.new_token("eve"))
    finally:
        hub.stop()
        pacs.stop()


def test_the_platform_reaches_the_hospital_pacs_with_its_own_credentials_only(hospital):
    connection = pacs_connection(hospital.settings)
    assert not connection.embedded and connection.dicomweb_url.endswith("/hospital/dicom-web")
    assert "password" not in repr(connection) and hospital.pacs.credentials().password not in repr(connection)
    assert connection.client().search_for_studies(limit=1) is not None
    assert not (hospital.settings.var_dir / "orthanc").exists()  # no embedded Orthanc was configured
    wrong = DICOMwebHTTPClient(connection.dicomweb_url, session=requests.Session())
    with pytest.raises(AccessDeniedError, match="HTTP 401"):
        wrong.search_for_studies()


def test_a_kernel_imports_reads_and_retrieves_through_the_gateway_from_the_hospital_pacs(hospital, tmp_path):
    series = small_ct_series(seed=81)
    for i, ds in enumerate(series):
        ds.save_as(tmp_path / f"{i}.dcm", enforce_file_format=True)
    session = requests.Session()
    session.headers.update(auth(hospital.token))
    gateway = DICOMwebHTTPClient(f"{hospital.hub.platform_url}dicom-web", session=session)
    report = import_files(gateway, [tmp_path], dataset="radiology")
    assert report.instances_stored == len(series) and not report.skipped
    study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    assert len(hospital.pacs.client().search_for_instances(study)) == len(series)  # stored in the hospital's PACS
    assert [s["0020000D"]["Value"][0] for s in gateway.search_for_studies()] == [study]
    got = gateway.retrieve_series(study, series_uid)  # WADO-RS streamed from the hospital PACS
    assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(str(d.SOPInstanceUID) for d in series)
    meta = requests.get(f"{hospital.hub.platform_url}dicom-web/studies/{study}/series/{series_uid}/metadata",
                        headers=auth(hospital.token), timeout=30)
    assert meta.status_code == 200 and hospital.pacs.credentials().password not in meta.text
    frames = requests.get(f"{hospital.hub.platform_url}dicom-web/studies/{study}/series/{series_uid}",
                          headers={**auth(hospital.token), "Accept": ACCEPT_STORED}, timeout=30)
    assert frames.status_code == 200 and len(frames.content) > 2000


def test_settings_for_a_pacs_by_url_are_checked_and_files_must_exist(tmp_path):
    (tmp_path / "medimg.toml").write_text('[pacs]\nurl = "pacs.example.org/dicom-web"\n')
    with pytest.raises(ConfigurationError, match="must be an http:// or https:// DICOMweb base URL"):
        load_settings(tmp_path / "medimg.toml")
    (tmp_path / "medimg.toml").write_text('[pacs]\nurl = "https://pacs.example.org/dicom-web"\nauth = "bearer"\n')
    with pytest.raises(ConfigurationError, match="auth='bearer' needs credentials_file"):
        load_settings(tmp_path / "medimg.toml")
    (tmp_path / "medimg.toml").write_text('[pacs]\nurl = "https://pacs.example.org/dicom-web"\nauth = "kerberos"\n')
    with pytest.raises(ConfigurationError, match="must be 'none', 'basic', 'bearer' or 'client-certificate'"):
        load_settings(tmp_path / "medimg.toml")
    (tmp_path / "medimg.toml").write_text('[pacs]\nurl = "https://pacs.example.org/dicom-web"\nauth = "bearer"\n'
                                          'credentials_file = "token.txt"\n')
    settings = load_settings(tmp_path / "medimg.toml")
    with pytest.raises(ConfigurationError, match="credentials_file=.*token.txt' does not exist"):
        pacs_connection(settings)
    (tmp_path / "token.txt").write_text("s3cret-token\n")
    connection = pacs_connection(settings)
    assert connection.session().headers["Authorization"] == "Bearer s3cret-token" and connection.verify is True
    assert "s3cret" not in repr(connection)


def test_a_pacs_that_is_down_is_a_clear_error(tmp_path):
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    settings = Settings(pacs=PacsSettings(url=down, auth="none"))
    with pytest.raises(DICOMwebError, match=f"cannot reach the DICOMweb server at {down}"):
        pacs_connection(settings).client().search_for_studies()


def test_medimg_up_starts_no_orthanc_of_its_own_for_a_pacs_by_url(tmp_path):
    from medimg_hub.stack import platform_services

    embedded = [s.name for s in platform_services(Settings(platform=PlatformSettings(var_dir=tmp_path)))]
    external = [s.name for s in platform_services(Settings(platform=PlatformSettings(var_dir=tmp_path),
                                                           pacs=PacsSettings(url="http://10.0.0.9/dicom-web")))]
    assert embedded[0] == "pacs" and "pacs" not in external and external == embedded[1:]
