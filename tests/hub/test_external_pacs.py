"""The platform against a hospital's DICOMweb PACS by URL (``[pacs] url``): a second, independently
configured Orthanc (its own account, another URL prefix, DICOMweb only) that the platform did not
start. The gateway's QIDO/WADO/STOW and a kernel's import go to it with the platform's credentials;
wrong credentials and a PACS that is down give clear errors. (The pipeline against it:
``tests/test_pipeline_e2e.py``, parameter ``external``.)"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from medimg_hub.access.datasets import seed_datasets
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.connection import pacs_connection
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port, port_in_use
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
    seed_datasets(engine, settings.datasets)
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


def _tls_material(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(cn: str, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey, issuer: str,
             usage: x509.ObjectIdentifier | None, ca: bool = False) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    pem = serialization.Encoding.PEM
    raw_key = (serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    # RSA: Orthanc 1.10's HTTPS server crashes (SIGSEGV) on its first connection with an EC key
    ca_key, server_key, client_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    files = {"ca": folder / "ca.pem", "server": folder / "server.pem", "client": folder / "client.pem",
             "client_key": folder / "client.key"}
    files["ca"].write_bytes(cert("hospital CA", ca_key, ca_key, "hospital CA", None, ca=True).public_bytes(pem))
    files["server"].write_bytes(cert("127.0.0.1", server_key, ca_key, "hospital CA", ExtendedKeyUsageOID.SERVER_AUTH)
                                .public_bytes(pem) + server_key.private_bytes(pem, *raw_key))
    files["client"].write_bytes(cert("medimg platform", client_key, ca_key, "hospital CA",
                                     ExtendedKeyUsageOID.CLIENT_AUTH).public_bytes(pem))
    files["client_key"].write_bytes(client_key.private_bytes(pem, *raw_key))
    return files


class _CertificateOnlyOrthanc(OrthancServer):
    """The hospital's Orthanc behind its TLS front: no passwords, the front admits by certificate.
    (Orthanc 1.10's own HTTPS server crashes on its first connection with Debian's OpenSSL 3, so
    the hospital terminates TLS in front of it, as nginx or stunnel commonly do.)"""

    def configuration(self) -> dict[str, object]:
        return {**super().configuration(), "AuthenticationEnabled": False}


def _tls_front(folder: Path, tls: dict[str, Path], backend_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """stunnel (Debian's stunnel4) on a free port: HTTPS with the server certificate, a client
    certificate signed by the hospital's CA required, plain HTTP to the backend."""
    port = free_port()
    config = folder / "stunnel.conf"
    config.write_text(f"foreground = yes\npid =\n[pacs]\naccept = 127.0.0.1:{port}\n"
                      f"connect = 127.0.0.1:{backend_port}\ncert = {tls['server']}\nCAfile = {tls['ca']}\n"
                      "verify = 2\n")
    process = subprocess.Popen(["stunnel", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not port_in_use("127.0.0.1", port):
        assert process.poll() is None and time.monotonic() < deadline, "stunnel did not start"
        time.sleep(0.1)
    return process, port


def test_a_pacs_over_https_with_a_client_certificate(tmp_path):
    """TLS verified against the hospital's CA, the platform admitted by its certificate (a real TLS
    front, stunnel, before a real Orthanc): STOW and QIDO through the hub-side client and a WADO-RS
    stream through the gateway's upstream (aiohttp); no certificate, or a CA that did not sign the
    server, is refused."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from medimg_hub.platform_api.gateway.upstream import Orthanc

    tls = _tls_material(tmp_path)
    pacs = _CertificateOnlyOrthanc(Settings(platform=PlatformSettings(var_dir=tmp_path / "hospital"),
                                            pacs=PacsSettings(http_port=free_port())))
    front = None
    try:
        pacs.start()
        front, port = _tls_front(tmp_path, tls, pacs.settings.pacs.http_port)
        url = f"https://127.0.0.1:{port}/dicom-web"
        settings = Settings(platform=PlatformSettings(var_dir=tmp_path / "var"), pacs=PacsSettings(
            url=url, auth="client-certificate", client_certificate=str(tls["client"]),
            client_key=str(tls["client_key"]), ca_file=str(tls["ca"])))
        connection = pacs_connection(settings)
        series = small_ct_series(seed=83)
        connection.client().store_instances(series)
        study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        assert len(connection.client().search_for_instances(study)) == len(series)

        async def stream() -> int:
            upstream = Orthanc(connection, ThreadPoolExecutor(2))
            assert not upstream.can_relay  # TLS: never spliced
            status, _, chunks = await upstream.open_stream(f"studies/{study}/series/{series_uid}", "",
                                                           {"Accept": ACCEPT_STORED})
            size = sum([len(c) async for c in chunks])
            await upstream.close()
            assert status == 200
            return size

        assert asyncio.run(stream()) > 2000
        anonymous = DICOMwebHTTPClient(url, session=requests.Session())
        anonymous._session.verify = str(tls["ca"])
        with pytest.raises(DICOMwebError):  # no client certificate: the TLS handshake is refused
            anonymous.search_for_studies()
        (tmp_path / "other").mkdir()
        (tmp_path / "other-ca.pem").write_bytes(_tls_material(tmp_path / "other")["ca"].read_bytes())
        wrong = Settings(platform=settings.platform, pacs=PacsSettings(
            url=url, auth="client-certificate", client_certificate=str(tls["client"]),
            client_key=str(tls["client_key"]), ca_file=str(tmp_path / "other-ca.pem")))
        with pytest.raises(DICOMwebError, match="cannot reach|SSL|certificate"):
            pacs_connection(wrong).client().search_for_studies()
    finally:
        if front is not None:
            front.terminate()
            front.wait(10)
        pacs.stop()
