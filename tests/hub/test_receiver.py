"""The DICOM receiver with real senders (dcmtk's storescu, pynetdicom) and a real Orthanc behind it:
routing to datasets (first rule wins), senders refused at association by AE title and by host,
non-images refused by an images-only dataset, unassigned studies listed for admins, and nothing
lost when the PACS is down (acknowledged instances wait in the spool and are stored later)."""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.filewriter
import pytest
from click.testing import CliRunner
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import BasicTextSRStorage, CTImageStorage  # type: ignore[attr-defined]

from medimg_hub.access.audit import AuditLog
from medimg_hub.access.datasets import DatasetDirectory, seed_datasets
from medimg_hub.cli.datasets import datasets_group
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.pacs.receiver import Receiver
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (DatasetSettings, PacsSettings, PlatformSettings, ReceiverSettings, RouteSettings,
                                 Settings, TasksSettings)
from medimg_kernel.client import DICOMwebHTTPClient
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from tests.series_factory import small_ct_series

pytestmark = pytest.mark.integration

DATASETS = (DatasetSettings("ct-research", "", "", read=("engineers",)),
            DatasetSettings("north", "", "", read=("engineers",)),
            DatasetSettings("reports-free", "", "", read=("engineers",), images_only=True))
ROUTES = (RouteSettings("ct-research", calling_aet="CT01", match=("Modality=CT",)),
          RouteSettings("north", institution="Northfield*"),
          RouteSettings("reports-free", calling_aet="MOD?R"))
SENDERS = ("CT01@127.0.0.1", "MODSR@127.0.0.1", "OTHER@127.0.0.1", "PACS2@10.9.9.9")


@dataclass
class Site:
    settings: Settings
    pacs: OrthancServer
    receiver: Receiver
    port: int
    engine: object

    def dataset_of(self, study: str) -> str | None:
        return DatasetDirectory(self.engine, ttl_s=0).dataset_of(study)  # type: ignore[arg-type]


def _settings(folder: Path, port: int, pacs_port: int) -> Settings:
    return Settings(platform=PlatformSettings(var_dir=folder / "var"), pacs=PacsSettings(http_port=pacs_port),
                    tasks=TasksSettings(database_url=f"sqlite:///{folder / 'platform.db'}"), datasets=DATASETS,
                    receiver=ReceiverSettings(port=port, aet="MEDIMG", senders=SENDERS, forward_interval_s=0.2),
                    routes=ROUTES)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("receiver")
    settings = _settings(folder, free_port(), free_port())
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    pacs = OrthancServer(settings)
    pacs.start()
    receiver = Receiver(settings, pacs.client())
    receiver.start()
    try:
        yield Site(settings, pacs, receiver, settings.receiver.port, engine)
    finally:
        receiver.stop()
        pacs.stop()
        engine.dispose()


def _write(series: list, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(series):
        paths.append(folder / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _storescu(calling: str, port: int, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["storescu", "-aet", calling, "-aec", "MEDIMG", "127.0.0.1", str(port), *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def _wait_in_pacs(client: DICOMwebHTTPClient, study: str, count: int, timeout_s: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if len(client.search_for_instances(study)) == count:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"study not in the PACS with {count} instances after {timeout_s} s")


def test_storescu_lands_a_study_in_the_dataset_its_rule_names_within_seconds(site, tmp_path):
    series = small_ct_series(seed=71)
    sent = _storescu("CT01", site.port, _write(series, tmp_path / "ct"))
    assert sent.returncode == 0, sent.stderr
    study = str(series[0].StudyInstanceUID)
    assert _wait_in_pacs(site.pacs.client(), study, len(series)) < 5.0
    assert site.dataset_of(study) == "ct-research"
    rows = AuditLog(site.engine).query(action="dicom-c-store")  # type: ignore[arg-type]
    assert any(r.study_instance_uid == study and r.dataset == "ct-research" and r.outcome.value == "allowed"
               and f"{len(series)} instances received from CT01@127.0.0.1" in (r.detail or "") for r in rows)


def test_the_first_rule_that_holds_wins_and_a_study_no_rule_takes_is_unassigned(site, tmp_path):
    ae = AE(ae_title="OTHER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    north = ct_series_from_volume(_volume(), _patient("NF1", "Northfield Clinic"))
    nowhere = ct_series_from_volume(_volume(), _patient("XX1", "Elsewhere"))
    assoc = ae.associate("127.0.0.1", site.port, ae_title="MEDIMG")
    assert assoc.is_established
    for ds in [*north, *nowhere]:
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    _wait_in_pacs(site.pacs.client(), str(north[0].StudyInstanceUID), len(north))
    _wait_in_pacs(site.pacs.client(), str(nowhere[0].StudyInstanceUID), len(nowhere))
    assert site.dataset_of(str(north[0].StudyInstanceUID)) == "north"  # OTHER is not CT01: rule 1 does not hold
    assert site.dataset_of(str(nowhere[0].StudyInstanceUID)) is None

    listed = CliRunner().invoke(datasets_group, ["unassigned"], obj=site.settings)
    assert listed.exit_code == 1 and str(nowhere[0].StudyInstanceUID) in listed.output
    assert str(north[0].StudyInstanceUID) not in listed.output
    counts = CliRunner().invoke(datasets_group, ["list"], obj=site.settings)
    assert counts.exit_code == 0 and "north" in counts.output


@pytest.mark.parametrize("calling", ["INTRUDER", "PACS2"])  # unknown; listed, but from another host
def test_unlisted_senders_are_refused_at_association_and_audited(site, tmp_path, calling):
    series = small_ct_series(seed=73 if calling == "INTRUDER" else 74)
    sent = _storescu(calling, site.port, _write(series, tmp_path / calling))
    assert sent.returncode != 0 and "Association Rejected" in sent.stderr + sent.stdout
    time.sleep(1.0)
    assert site.pacs.client().search_for_instances(str(series[0].StudyInstanceUID)) == []
    rows = AuditLog(site.engine).query(action="dicom-c-store", outcome="denied")  # type: ignore[arg-type]
    assert any(r.user == f"dicom:{calling}" and "refused: not a listed sender" in (r.detail or "") for r in rows)


def test_an_images_only_dataset_refuses_a_report_and_takes_the_images(site):
    ae = AE(ae_title="MODSR")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(BasicTextSRStorage, ExplicitVRLittleEndian)
    images = ct_series_from_volume(_volume(), _patient("SR1", "Report Clinic"))
    report = copy.deepcopy(images[0])
    report.SOPClassUID = BasicTextSRStorage
    report.SOPInstanceUID = generate_uid()
    report.Modality = "SR"
    report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    del report.PixelData
    assoc = ae.associate("127.0.0.1", site.port, ae_title="MEDIMG")
    refused = assoc.send_c_store(report)
    assert refused.Status == 0x0122 and "images only" in refused.ErrorComment
    statuses = [assoc.send_c_store(ds) for ds in images]
    assert all(s.Status == 0x0000 for s in statuses), statuses
    assoc.release()
    study = str(images[0].StudyInstanceUID)
    _wait_in_pacs(site.pacs.client(), study, len(images))  # the images, and not the report
    assert site.dataset_of(study) == "reports-free"


def test_nothing_is_lost_while_the_pacs_is_down(site, tmp_path):
    """A receiver whose PACS is unreachable still acknowledges (the spool holds the instances); a
    new receiver process, with the PACS back, stores them."""
    down = DICOMwebHTTPClient(f"http://127.0.0.1:{free_port()}/dicom-web")
    settings = _settings(tmp_path, free_port(), site.settings.pacs.http_port)
    upgrade(settings.database_url)
    seed_datasets(make_engine(settings.database_url), settings.datasets)
    first = Receiver(settings, down)
    first.start()
    series = small_ct_series(seed=75)
    try:
        assert _storescu("CT01", settings.receiver.port, _write(series, tmp_path / "ct")).returncode == 0
        time.sleep(1.0)
    finally:
        first._server.shutdown()  # a crash: no final forwarding pass
        first._stop.set()
    spooled = list((settings.var_dir / "receiver" / "spool" / "ct-research").rglob("*.dcm"))
    assert len(spooled) == len(series)
    second = Receiver(settings, site.pacs.client())
    assert second.forward_once() == len(series)
    assert len(site.pacs.client().search_for_instances(str(series[0].StudyInstanceUID))) == len(series)
    assert not list((settings.var_dir / "receiver" / "spool").rglob("*.dcm"))
    assert second.forward_once() == 0
    second.engine.dispose()


def _volume():
    from medimg_kernel.volume import Volume
    import numpy as np

    return Volume(np.zeros((3, 8, 8), np.int16), (2.0, 1.0, 1.0))


def _patient(patient_id: str, institution: str) -> SyntheticPatient:
    return SyntheticPatient(patient_id, f"RECEIVER^{patient_id}", generate_uid(), institution_name=institution)


def test_an_implicit_vr_instance_is_routed_by_its_header_and_stored_as_received(site):
    """Routing reads the header of the bytes as received (here implicit VR, a rule on Modality);
    the spool file is those bytes behind a file meta group naming their transfer syntax."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    series = small_ct_series(seed=77)
    assoc = ae.associate("127.0.0.1", site.port, ae_title="MEDIMG")
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds) for ds in series]
    assoc.release()
    assert all(s.Status == 0x0000 for s in statuses), statuses
    study = str(series[0].StudyInstanceUID)
    _wait_in_pacs(site.pacs.client(), study, len(series))
    assert site.dataset_of(study) == "ct-research"  # CT01 + Modality=CT
    stored = site.pacs.client().retrieve_instance(study, str(series[2].SeriesInstanceUID), str(series[2].SOPInstanceUID))
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert np.array_equal(stored.pixel_array, series[2].pixel_array)


def test_the_file_meta_group_is_what_pydicom_writes(tmp_path):
    """part10_header is byte for byte pydicom's (and pynetdicom's) File Meta Information, odd-length
    values padded; the file it starts reads back whole."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.filebase import DicomBytesIO
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    from medimg_hub.pacs.receiver import part10_header

    ds = small_ct_series(seed=78)[0]
    for aet in ("CT01", "ODD", ""):
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        if aet:
            meta.SourceApplicationEntityTitle = aet
        expected = DicomBytesIO()
        expected.is_little_endian, expected.is_implicit_VR = True, False
        write_file_meta_info(expected, meta)
        header = part10_header(str(ds.SOPClassUID), str(ds.SOPInstanceUID), ExplicitVRLittleEndian, aet)
        assert header == b"\x00" * 128 + b"DICM" + expected.getvalue()
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, ds)
    path = tmp_path / "instance.dcm"
    path.write_bytes(header + body.getvalue())
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID and np.array_equal(back.pixel_array, ds.pixel_array)
