"""The engineer's path through every real part: log in to JupyterHub over HTTP, spawn the CPU
profile, and from code in a real kernel read a granted dataset with ``medimg_kernel.connect()``
(through the proxy and the platform API's gateway to Orthanc) and be refused another; every
access is in the audit log."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from medimg_kernel.phantom.demo import generate_demo
from medimg_hub.demo.users import ensure_demo_users
from medimg_hub.servers.jupyterhub import JupyterHubServer
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.access.datasets import ingest_assigner, seed_datasets
from medimg_hub.access.models import AuditEvent
from medimg_hub.servers.process import free_port
from medimg_hub.settings import HubSettings, PacsSettings, PlatformSettings, Settings, TasksSettings, dump_settings, load_settings
from medimg_hub.db.migrations import upgrade
from medimg_hub.db import make_engine
from tests.hub.hubproc import Hub, HubBrowser, run_in_kernel

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE = """
import json
import medimg_kernel as mk
client = mk.connect()
studies = sorted(s["0020000D"]["Value"][0] for s in client.search_for_studies())
volume = mk.read_series(client, GRANTED_STUDY, GRANTED_SERIES)
try:
    mk.read_series(client, OTHER_STUDY, OTHER_SERIES)
    refused = "no"
except mk.AccessDeniedError as exc:
    refused = str(exc.status)
print(json.dumps({"studies": studies, "shape": list(volume.shape), "refused": refused}))
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("platform")
    built = Settings(
        platform=PlatformSettings(var_dir=root / "var", start_timeout_s=60.0),
        pacs=PacsSettings(http_port=free_port()),
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
        manifest = generate_demo(root / "demo", n_sites=3, studies_per_site=1, seed=3)
        ingest_files(pacs.client(), [root / "demo" / f for s in manifest.studies for f in s.files],
                     assign=ingest_assigner(engine))
        passwords = ensure_demo_users(settings)
        hub.start()
        yield Hub(settings, f"http://127.0.0.1:{settings.hub.port}", passwords, hub.process.log_file), manifest, engine
    finally:
        hub.stop()
        pacs.stop()
        engine.dispose()


def test_engineer_kernel_reads_its_dataset_and_is_refused_another(platform):
    hub, manifest, engine = platform
    by_site = {s.site: s for s in manifest.studies}
    granted, other = by_site["SITEA"], by_site["SITEC"]  # engineers read site-a and site-b, not site-c
    browser = HubBrowser(hub)
    assert browser.logged_in(browser.login("engineer1", hub.passwords["engineer1"]))
    landing = browser.spawn_form("engineer1", "engineer-cpu")
    assert landing.url.endswith("/user/engineer1/lab")
    code = (f"GRANTED_STUDY, GRANTED_SERIES = {granted.study_instance_uid!r}, {granted.series_instance_uid!r}\n"
            f"OTHER_STUDY, OTHER_SERIES = {other.study_instance_uid!r}, {other.series_instance_uid!r}\n{PROBE}")
    out = run_in_kernel(hub, "engineer1", browser.new_token("engineer1"), code, timeout_s=120)
    assert out["error"] == "", out
    result = json.loads(out["stdout"].strip().splitlines()[-1])
    assert result["studies"] == sorted([by_site["SITEA"].study_instance_uid, by_site["SITEB"].study_instance_uid])
    assert result["shape"] == list(granted.shape)
    assert result["refused"] == "403"

    with Session(engine) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.user_name == "engineer1")).all()
    outcomes = {(e.action, e.outcome) for e in events}
    assert ("qido", "allowed") in outcomes and ("wado", "allowed") in outcomes and ("wado", "denied") in outcomes
    assert all("PHANTOM" not in json.dumps(e.__dict__, default=str) for e in events)  # no patient names
