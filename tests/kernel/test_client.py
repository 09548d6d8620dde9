"""DICOMweb clients against a real Orthanc (STOW → QIDO → WADO) and a local folder."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from medimg_hub.servers.process import free_port
from medimg_kernel import client as client_module
from medimg_kernel.client import DICOMfolderClient, DICOMwebHTTPClient, connect
from medimg_kernel.errors import AccessDeniedError, ConfigurationError, DICOMwebError, NotFoundError
from tests.series_factory import small_ct_series

pytestmark = pytest.mark.integration


def _uids(ds):
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _assert_same_instances(retrieved, sent):
    by_uid = {str(d.SOPInstanceUID): d for d in retrieved}
    assert set(by_uid) == {str(d.SOPInstanceUID) for d in sent}
    for original in sent:
        got = by_uid[str(original.SOPInstanceUID)]
        assert np.array_equal(got.pixel_array, original.pixel_array)
        assert got.ImagePositionPatient == original.ImagePositionPatient


def test_stow_qido_wado_round_trip(orthanc):
    client = orthanc.client()
    series = small_ct_series(seed=1)
    study_uid, series_uid = _uids(series[0])
    response = client.store_instances(series)
    assert len(response.ReferencedSOPSequence) == len(series)
    assert not getattr(response, "FailedSOPSequence", None)

    studies = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study_uid]
    found = client.search_for_series(study_uid, search_filters={"Modality": "CT"})
    assert [s["0020000E"]["Value"][0] for s in found] == [series_uid]
    instances = client.search_for_instances(study_uid, series_uid)
    assert len(instances) == len(series)

    _assert_same_instances(client.retrieve_series(study_uid, series_uid), series)
    streamed = client.iter_series(study_uid, series_uid)
    first = next(streamed)
    assert str(first.SeriesInstanceUID) == series_uid
    assert len([first, *streamed]) == len(series)
    one = client.retrieve_instance(study_uid, series_uid, str(series[2].SOPInstanceUID))
    assert np.array_equal(one.pixel_array, series[2].pixel_array)
    assert len(client.retrieve_series_metadata(study_uid, series_uid)) == len(series)
    _assert_same_instances(client.retrieve_study(study_uid), series)


def test_storing_again_changes_nothing(orthanc):
    client = orthanc.client()
    series = small_ct_series(seed=2)
    client.store_instances(series)
    modified = small_ct_series(seed=2)
    modified[0].PixelData = bytes(len(modified[0].PixelData))  # same SOP Instance UID, other pixels
    client.store_instances(modified[:1])
    study_uid, series_uid = _uids(series[0])
    _assert_same_instances(client.retrieve_series(study_uid, series_uid), series)


def test_unknown_series_is_not_found(orthanc):
    client = orthanc.client()
    series = small_ct_series(seed=3)
    client.store_instances(series)
    with pytest.raises(NotFoundError) as info:
        client.retrieve_series(str(series[0].StudyInstanceUID), "1.2.3.4.5.6.7")
    assert info.value.status == 404


def test_wrong_credentials_are_refused(orthanc):
    session = requests.Session()
    session.auth = ("medimg-platform", "not-the-password")
    client = DICOMwebHTTPClient(orthanc.dicomweb_url, session=session)
    with pytest.raises(AccessDeniedError) as info:
        client.search_for_studies()
    assert info.value.status == 401
    assert requests.get(orthanc.dicomweb_url + "/studies", timeout=5).status_code == 401


def test_unreachable_server_says_where():
    client = DICOMwebHTTPClient(f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(DICOMwebError, match="cannot reach the DICOMweb server"):
        client.search_for_studies()
    with pytest.raises(DICOMwebError, match="cannot reach"):
        client.retrieve_series("1.2.3", "1.2.3.4")


@pytest.mark.parametrize("bad", ["../../tools", "1.2.3/../../instances", "1.2.x", "1." * 40 + "1"])
def test_malformed_uids_are_refused_before_any_request(orthanc, bad):
    with pytest.raises(ConfigurationError, match="not a valid DICOM UID"):
        orthanc.client().retrieve_series("1.2.3", bad)


def test_folder_client_has_the_same_verbs(tmp_path):
    series = small_ct_series(seed=4)
    for ds in series[:3]:
        ds.save_as(tmp_path / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    client = DICOMfolderClient(tmp_path)
    study_uid, series_uid = _uids(series[0])
    client.store_instances(series[3:])
    assert len(client.search_for_instances(study_uid, series_uid)) == len(series)
    _assert_same_instances(client.retrieve_series(study_uid, series_uid), series)
    with pytest.raises(NotFoundError):
        client.retrieve_series(study_uid, "1.2.3.4")


def test_connect_chooses_the_backend(tmp_path, monkeypatch):
    monkeypatch.delenv(client_module.URL_ENV_VAR, raising=False)
    with pytest.raises(ConfigurationError, match="MEDIMG_DICOMWEB_URL"):
        connect()
    assert isinstance(connect(tmp_path), DICOMfolderClient)
    assert isinstance(connect(tmp_path.as_uri()), DICOMfolderClient)
    monkeypatch.setenv(client_module.URL_ENV_VAR, "http://127.0.0.1:1/dicom-web")
    monkeypatch.setenv(client_module.TOKEN_ENV_VAR, "abc123")
    http = connect()
    assert isinstance(http, DICOMwebHTTPClient)
    assert http._session.headers["Authorization"] == "token abc123"
