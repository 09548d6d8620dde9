"""The embedded PACS: configuration, lifecycle, persistence, refusal of bad requests."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import ServiceError, free_port
from medimg_hub.settings import PacsSettings, PlatformSettings, Settings
from tests.series_factory import small_ct_series

pytestmark = pytest.mark.integration


def _server(var_dir: Path, port: int | None = None) -> OrthancServer:
    return OrthancServer(Settings(platform=PlatformSettings(var_dir=var_dir), pacs=PacsSettings(http_port=port or free_port())))


def test_configuration_is_locked_down(tmp_path):
    server = _server(tmp_path)
    config_file = server.write_configuration()
    config = json.loads(config_file.read_text())
    assert config["AuthenticationEnabled"] is True
    assert config["RemoteAccessAllowed"] is False
    assert config["DicomServerEnabled"] is False
    assert config["TcpNoDelay"] is True
    assert config["ExecuteLuaEnabled"] is False and config["WebDavEnabled"] is False
    assert config["StorageDirectory"].startswith(str(tmp_path))
    for secret in (config_file, server.secret_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert server.credentials() == server.credentials()  # generated once, then reused
    assert len(server.credentials().password) >= 32


def test_lifecycle_start_twice_stale_pid_and_persistence(tmp_path):
    server = _server(tmp_path)
    try:
        assert server.start() is True
        pid = server.process.pid()
        assert server.start() is False  # already running: not a second process
        assert server.process.pid() == pid
        series = small_ct_series(seed=11)
        server.client().store_instances(series)
        assert server.stop() is True
        assert server.stop() is False
        assert server.process.status().running is False

        # A stale pid file pointing at a live process that is not Orthanc must not fool us.
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            server.process.pid_file.write_text(f"{sleeper.pid}\n")
            assert server.process.pid() is None
            assert not server.process.pid_file.exists()
            server.process.pid_file.write_text("999999999\n")  # a pid that cannot exist
            assert server.start() is True
        finally:
            sleeper.kill()
            sleeper.wait()
        found = server.client().search_for_instances(str(series[0].StudyInstanceUID))
        assert len(found) == len(series)  # data survived down/up
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error(tmp_path, orthanc):
    clash = _server(tmp_path, port=orthanc.settings.pacs.http_port)
    with pytest.raises(ServiceError, match=r"port \d+ is already in use.*http_port"):
        clash.start()


def test_unauthenticated_and_non_dicomweb_requests_are_refused(orthanc):
    assert requests.get(orthanc.dicomweb_url + "/studies", timeout=5).status_code == 401
    session = orthanc.session()
    # Writing files or running Lua through the REST API is off.
    assert session.post(orthanc.base_url + "/tools/execute-script", data="print(1)", timeout=5).status_code >= 400


def test_malformed_upload_is_refused_and_the_pacs_stays_up(orthanc):
    client = orthanc.client()
    before = len(client.search_for_studies())
    response = orthanc.session().post(
        orthanc.dicomweb_url + "/studies",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\nnot dicom at all\r\n--b--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        timeout=10,
    )
    assert response.status_code >= 400 or "FailedSOPSequence" in response.text or '"00081198"' in response.text
    assert orthanc.is_ready()
    assert len(client.search_for_studies()) == before
