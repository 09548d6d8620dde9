"""The outbox of finalised results without the network: signatures, backoff, settings, and the
``deliveries`` rows on SQLite and a real PostgreSQL (enqueued with the decision or not at all,
claimed under a lease by one worker at a time, retried with backoff, failed, retried by hand)."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medimg_hub.access.audit import AuditLog
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.delivery import DeliveryKind, DeliveryStatus, Outbox
from medimg_hub.delivery.outbox import DeliveryNotFoundError, backoff_s, idempotency_key
from medimg_hub.delivery.signing import SignatureError, read_secret, sign, verify_signature
from medimg_hub.pipeline.decisions import deliveries_hook
from medimg_hub.pipeline.service import TaskService
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.settings import (DatasetSettings, DestinationSettings, QueueSettings, Settings, TasksSettings,
                                 WebhookSettings, load_settings)
from medimg_hub.settings.destinations import RetrySettings
from medimg_kernel.errors import ConfigurationError
from medimg_kernel.pipeline import load_pipeline

from .postgres import PostgresServer, postgres_available

REPO = Path(__file__).resolve().parents[2]
SERIES = "1.2.826.0.1.3680043.8.498.77"
SEG_UID, SR_UID = "1.2.826.0.1.3680043.8.498.78", "1.2.826.0.1.3680043.8.498.79"


class FakeClock:
    """A clock the test moves by hand (timezone-aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- signatures and backoff ----------------------------------------------------------------------


def test_the_signature_is_an_hmac_of_timestamp_and_body_and_verifies() -> None:
    secret, body = b"k" * 32, b'{"decision":"accepted"}'
    header = sign(secret, body, timestamp=1_800_000_000)
    expected = hmac.new(secret, b"1800000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={expected}"
    assert verify_signature(secret, header, body, now=1_800_000_100) == 1_800_000_000
    with pytest.raises(SignatureError, match="no v1 matches"):
        verify_signature(secret, header, body + b" ", now=1_800_000_000)
    with pytest.raises(SignatureError, match="no v1 matches"):
        verify_signature(b"other", header, body, now=1_800_000_000)
    with pytest.raises(SignatureError, match="tolerance 300"):
        verify_signature(secret, header, body, now=1_800_000_301)  # a replay, 5 minutes later
    for bad in ("", "v1=abc", "t=x,v1=abc", f"t=1800000000,t=1,v1={expected}"):
        with pytest.raises(SignatureError, match="must be 't=<unix seconds>"):
            verify_signature(secret, bad, body, now=1_800_000_000)
    rotated = f"t=1800000000,v1={'0' * 64},v1={expected}"  # several v1 while keys rotate: one must match
    assert verify_signature(secret, rotated, body, now=1_800_000_000) == 1_800_000_000


def test_the_secret_file_must_be_private_and_not_empty(tmp_path: Path) -> None:
    file = tmp_path / "hook.key"
    file.write_text("  s3cret\n")
    file.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others.*chmod 600"):
        read_secret(file)
    file.chmod(0o600)
    assert read_secret(file) == b"s3cret"
    file.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        read_secret(file)
    with pytest.raises(ConfigurationError, match="does not exist"):
        read_secret(tmp_path / "missing")


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    retry = RetrySettings(backoff_s=10.0, max_backoff_s=100.0)
    assert [backoff_s(n, retry, rand=lambda: 1.0) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]
    assert [backoff_s(n, retry, rand=lambda: 0.0) for n in range(1, 4)] == [5, 10, 20]
    samples = [backoff_s(3, retry) for _ in range(200)]
    assert all(20 <= s <= 40 for s in samples) and len(set(samples)) > 100
    assert backoff_s(10_000, retry, rand=lambda: 1.0) == 100  # no overflow on absurd counts


def test_idempotency_keys_are_stable_per_job_and_target() -> None:
    job = "7d8f1c1e-2b52-4c55-9a1e-5b3a7c2d9e10"
    assert idempotency_key(job, "webhooks", "ris") == idempotency_key(job, "webhooks", "ris")
    assert len({idempotency_key(job, "webhooks", "ris"), idempotency_key(job, "destinations", "ris"),
                idempotency_key(job[:-1] + "1", "webhooks", "ris")}) == 3


# --- settings --------------------------------------------------------------------------------------


def _toml(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "medimg.toml").write_text(text)
    return load_settings(tmp_path / "medimg.toml")


DATASET = '[[datasets]]\nname = "radiology"\nexport_to = ["hospital"]\nwebhook = "ris"\n'
DEST = '[[destinations]]\nname = "hospital"\nurl = "https://pacs.example.org/dicom-web"\n'
HOOK = '[[webhooks]]\nname = "ris"\nurl = "https://ris.example.org/hooks/medimg"\nsecret_file = "ris.key"\n'


def test_destinations_and_webhooks_are_read_and_checked_naming_the_table(tmp_path: Path) -> None:
    settings = _toml(tmp_path, DATASET + DEST + HOOK + '[[destinations]]\nname = "archive"\nkind = "dicom"\n'
                     'host = "10.0.0.5"\nport = 11112\ncalled_aet = "ARCHIVE"\n')
    assert settings.datasets[0].export_to == ("hospital",) and settings.datasets[0].webhook == "ris"
    assert [d.kind for d in settings.destinations] == ["dicomweb", "dicom"]
    assert settings.webhooks[0].timeout_s == 10.0 and settings.destinations[0].max_attempts == 20
    refusals = {
        DATASET + HOOK: r"export_to names \['hospital'\], which are not \[\[destinations\]\]",
        DATASET + DEST: "webhook='ris' is not a \\[\\[webhooks\\]\\] name",
        DATASET + DEST.replace("https://pacs", "pacs") + HOOK: r"\[\[destinations\]\] number 1 \(hospital\): url=",
        DATASET + DEST + 'auth = "basic"\n' + HOOK: "auth='basic' needs credentials_file",
        DATASET + DEST + 'kind = "hl7"\n' + HOOK: "kind='hl7' must be one of",
        DATASET + DEST + HOOK.replace('secret_file = "ris.key"\n', ""): r"\[\[webhooks\]\] number 1 \(ris\): "
                                                                         "secret_file is required",
        DATASET + DEST + HOOK + "max_attempts = 0\n": "max_attempts=0 must be at least 1",
        DATASET + DEST + HOOK + "backoff_s = 60.0\nmax_backoff_s = 5.0\n": "max_backoff_s=5.0 is below backoff_s",
        DATASET + DEST + HOOK + HOOK: "names must be unique",
        DATASET + DEST + 'kind = "dicom"\n' + HOOK: "kind='dicom' needs host",
        DATASET + DEST + 'kind = "dicom"\nhost = "h"\ncalled_aet = "A VERY LONG AE TITLE"\n' + HOOK: "called_aet=",
        DATASET + DEST + HOOK + "timeout_s = 200.0\n[deliveries]\nlease_s = 300.0\n": "lease_s=300.0 must exceed twice",
        DATASET + DEST + HOOK + '[[hooks]]\nname = "x"\n': r"unknown section\(s\) \['hooks'\]",
        DATASET + DEST + HOOK + 'secret = "inline"\n': r"unknown key\(s\) \['secret'\] in \[webhooks\[0\]\]",
    }
    for text, message in refusals.items():
        with pytest.raises(ConfigurationError, match=message):
            _toml(tmp_path, text)


def test_the_documented_settings_file_loads_and_round_trips(tmp_path: Path) -> None:
    from medimg_hub.settings import dump_settings

    settings = _toml(tmp_path, DATASET + DEST + HOOK)
    again = load_settings(dump_settings(settings, tmp_path / "again" / "medimg.toml"))
    assert again.destinations == settings.destinations and again.datasets == settings.datasets
    assert again.webhooks[0].secret_file == "ris.key" and again.deliveries == settings.deliveries
    assert load_settings(REPO / "medimg.toml").destinations == ()  # the shipped file: nothing leaves by default


# --- the outbox on both backends ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'platform.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    upgrade(url)
    return url


def _settings(url: str, **dataset: object) -> Settings:
    return Settings(
        tasks=TasksSettings(database_url=url), queue=QueueSettings(broker_url="memory://"),
        datasets=(DatasetSettings("radiology", export_to=("stow", "cstore"), webhook="ris", **dataset),),  # type: ignore[arg-type]
        destinations=(DestinationSettings(name="stow", url="http://127.0.0.1:9/dicom-web", max_attempts=3,
                                          backoff_s=10.0, max_backoff_s=60.0),
                      DestinationSettings(name="cstore", kind="dicom", host="127.0.0.1", called_aet="HOSP")),
        webhooks=(WebhookSettings(name="ris", url="http://127.0.0.1:9/hook", secret_file="k"),))


def _waiting_review(store: TaskStore) -> str:
    pipeline = load_pipeline(REPO / "notebooks" / "pipelines" / "example-echo" / "pipeline.yaml")
    task = store.create_task(pipeline, {"series_instance_uid": SERIES}, owner="eve", dataset="radiology",
                             study_instance_uid="1.2.826.0.1.3680043.8.498.76")
    echo = task.job("echo")
    assert store.execution.claim(echo.id, "w") is not None
    store.execution.succeed(echo.id, "w", {"model_name": "organs", "model_version": 4})
    return task.job("review").id


OUTPUTS = {"seg_sop_instance_uids": [SEG_UID], "sr_sop_instance_uids": [SR_UID],
           "series_instance_uids": ["1.2.826.0.1.3680043.8.498.80", "1.2.826.0.1.3680043.8.498.81"]}


@pytest.fixture
def decided(database_url: str) -> Iterator[tuple[Settings, TaskStore, Outbox, FakeClock, str]]:
    """A finalised review (SEG + SR stored) of a dataset exporting to two PACS and a webhook."""
    settings = _settings(database_url)
    clock = FakeClock()
    store = TaskStore(database_url, clock=clock)
    engine = make_engine(database_url)
    job = _waiting_review(store)
    TaskService(settings, store).decide(job, "corrected", actor="alan", outputs=OUTPUTS)
    try:
        yield settings, store, Outbox(engine, clock=clock), clock, job
    finally:
        store.close()
        engine.dispose()


def test_a_final_decision_queues_one_delivery_per_target_with_what_it_announces(decided) -> None:
    settings, store, outbox, _, job = decided
    rows = sorted(outbox.list_deliveries(job_id=job), key=lambda r: r.id)
    assert [(r.kind, r.target, r.status, r.attempts) for r in rows] == [
        (DeliveryKind.DICOMWEB, "stow", DeliveryStatus.PENDING, 0), (DeliveryKind.DICOM, "cstore", DeliveryStatus.PENDING, 0),
        (DeliveryKind.WEBHOOK, "ris", DeliveryStatus.PENDING, 0)]
    assert rows[2].idempotency_key == idempotency_key(job, "webhooks", "ris")
    payload = rows[0].payload
    assert payload["decision"] == "corrected" and payload["decided_by"] == "alan" and payload["dataset"] == "radiology"
    assert payload["pipeline"] == {"id": "example-echo", "version": "1.0"}
    assert payload["model"] == {"name": "organs", "version": 4}
    assert payload["instances"] == [
        {"role": "seg", "sop_instance_uid": SEG_UID, "series_instance_uid": "1.2.826.0.1.3680043.8.498.80"},
        {"role": "sr", "sop_instance_uid": SR_UID, "series_instance_uid": "1.2.826.0.1.3680043.8.498.81"}]
    assert "PHANTOM" not in str(payload) and "patient" not in str(payload).lower()
    queued = AuditLog(make_engine(settings.database_url)).query(action="delivery.queued")
    assert len(queued) == 1 and queued[0].user == "alan" and "stow, cstore, ris" in (queued[0].detail or "")


def test_a_rejection_is_announced_but_pushes_nothing(database_url: str) -> None:
    settings = _settings(database_url)
    with TaskStore(database_url) as store:
        job = _waiting_review(store)
        TaskService(settings, store).decide(job, "rejected", actor="alan", reason="wrong series")
    rows = Outbox(make_engine(database_url)).list_deliveries(job_id=job)
    assert [(r.kind, r.payload["decision"], r.payload["instances"]) for r in rows] == [
        (DeliveryKind.WEBHOOK, "rejected", [])]


def test_a_decision_whose_deliveries_cannot_be_queued_is_not_stored(database_url: str) -> None:
    """The decision and its deliveries commit together: a failure in between leaves the job waiting."""
    settings = _settings(database_url)
    with TaskStore(database_url) as store:
        job = _waiting_review(store)

        def broken(session, row, now):  # type: ignore[no-untyped-def]
            deliveries_hook(settings)(session, row, now)
            raise RuntimeError("the process died between the decision and its deliveries")

        with pytest.raises(RuntimeError, match="process died"):
            store.decide(job, "accepted", "alan", outputs=OUTPUTS, on_decided=broken)
        assert store.get_job(job).status.value == "waiting_review"
        assert Outbox(make_engine(database_url)).list_deliveries(job_id=job) == []
        TaskService(settings, store).decide(job, "accepted", actor="alan", outputs=OUTPUTS)  # and it can be redone
        assert len(Outbox(make_engine(database_url)).list_deliveries(job_id=job)) == 3


def test_a_dataset_that_exports_nowhere_queues_nothing(database_url: str) -> None:
    settings = replace(_settings(database_url), datasets=(DatasetSettings("radiology"),))
    with TaskStore(database_url) as store:
        job = _waiting_review(store)
        TaskService(settings, store).decide(job, "accepted", actor="alan", outputs=OUTPUTS)
    assert Outbox(make_engine(database_url)).list_deliveries() == []


def test_a_lease_lets_one_worker_send_a_row_and_the_webhook_waits_for_the_pushes(decided) -> None:
    _, _, outbox, clock, _ = decided
    first = outbox.claim("worker-1", lease_s=60)
    assert sorted(r.target for r in first) == ["cstore", "stow"]  # the webhook waits for the pushes
    assert outbox.claim("worker-2", lease_s=60) == []  # leased
    clock.advance(61)  # worker-1 died: its leases lapse and worker-2 takes over
    second = outbox.claim("worker-2", lease_s=60)
    assert sorted(r.target for r in second) == ["cstore", "stow"] and {r.lease_owner for r in second} == {"worker-2"}
    assert outbox.fail(first[0].id, "worker-1", "late", RetrySettings()) is None  # not worker-1's any more
    stow = next(r for r in second if r.target == "stow")
    cstore = next(r for r in second if r.target == "cstore")
    assert outbox.succeed(stow.id, "worker-2", "stored")
    assert outbox.claim("worker-2", lease_s=60) == []  # cstore still pending: the webhook still waits
    assert outbox.succeed(cstore.id, "worker-2", "stored")
    assert [r.target for r in outbox.claim("worker-2", lease_s=60)] == ["ris"]
    assert not outbox.succeed(stow.id, "worker-1", "again")  # settled rows stay settled


def test_a_worker_renews_its_lease_between_steps_and_learns_when_it_was_lost(decided) -> None:
    _, _, outbox, clock, _ = decided
    stow = next(r for r in outbox.claim("worker-1", lease_s=60) if r.target == "stow")
    clock.advance(50)
    assert outbox.renew(stow.id, "worker-1", lease_s=60)  # a long read: the push gets a fresh minute
    clock.advance(50)
    assert "stow" not in [r.target for r in outbox.claim("worker-2", lease_s=60)]  # still held
    clock.advance(11)
    assert "stow" in [r.target for r in outbox.claim("worker-2", lease_s=60)]
    assert not outbox.renew(stow.id, "worker-1", lease_s=60)  # worker-1 must stop: worker-2 sends it


def test_concurrent_claims_never_hand_one_row_to_two_workers(decided) -> None:
    _, _, outbox, _, _ = decided
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        barrier.wait()
        results[name] = [r.id for r in outbox.claim(name, lease_s=60)]

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [i for ids in results.values() for i in ids]
    assert len(results) == 6 and len(claimed) == len(set(claimed)) == 2


def test_failures_back_off_then_give_up_and_a_retry_sends_again(decided) -> None:
    settings, _, outbox, clock, _ = decided
    retry = settings.destinations[0]  # 3 attempts, 10 s doubling, 60 s cap
    stow = next(r for r in outbox.claim("w", 60) if r.target == "stow")
    after = outbox.fail(stow.id, "w", "HTTP 503 from the PACS", retry, rand=lambda: 1.0)
    assert after is not None and after.status is DeliveryStatus.PENDING and after.attempts == 1
    assert after.next_attempt_at == clock.now + timedelta(seconds=10) and after.last_error == "HTTP 503 from the PACS"
    clock.advance(9)
    assert "stow" not in [r.target for r in outbox.claim("w", 60)]  # not due yet
    clock.advance(61)
    stow = next(r for r in outbox.claim("w2", 60) if r.target == "stow")
    after = outbox.fail(stow.id, "w2", "HTTP 503 again", retry, rand=lambda: 1.0)
    assert after is not None and after.next_attempt_at == clock.now + timedelta(seconds=20)
    clock.advance(21)
    stow = next(r for r in outbox.claim("w3", 60) if r.target == "stow")
    after = outbox.fail(stow.id, "w3", "HTTP 503 a third time", retry)
    assert after is not None and after.status is DeliveryStatus.FAILED and after.attempts == 3
    clock.advance(3600)
    assert "stow" not in [r.target for r in outbox.claim("w4", 60)]
    assert [r.target for r in outbox.list_deliveries(status="failed")] == ["stow"]
    again = outbox.retry(stow.id, "cli:ops")
    assert again.status is DeliveryStatus.PENDING and again.attempts == 0 and again.last_error == "HTTP 503 a third time"
    assert "stow" in [r.target for r in outbox.claim("w5", 60)]
    with pytest.raises(DeliveryNotFoundError, match="no delivery with id 999999"):
        outbox.retry(999_999, "cli:ops")
    actions = [r.action for r in AuditLog(make_engine(settings.database_url)).query(limit=50)]
    assert actions.count("delivery.attempt") == 2 and actions.count("delivery.failed") == 1
    assert actions.count("delivery.retry") == 1


def test_medimg_up_runs_the_delivery_worker_only_when_a_dataset_exports(tmp_path: Path) -> None:
    from medimg_hub.cli.main import _describe
    from medimg_hub.delivery.worker import READY_TEXT
    from medimg_hub.settings import PlatformSettings
    from medimg_hub.stack import platform_services

    quiet = Settings(platform=PlatformSettings(var_dir=tmp_path))
    assert "deliveries" not in [s.name for s in platform_services(quiet, hub=False)]
    exporting = replace(_settings(f"sqlite:///{tmp_path / 'p.db'}"), platform=PlatformSettings(var_dir=tmp_path))
    services = {s.name: s for s in platform_services(exporting, hub=False)}
    worker = services["deliveries"]
    assert worker.process.argv[-2:] == ["deliveries", "run"] and worker.ready_text == READY_TEXT  # type: ignore[attr-defined]
    assert list(services).index("deliveries") > list(services).index("pacs")
    assert "Delivery worker" in _describe("deliveries")
