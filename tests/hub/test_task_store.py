"""The task store on SQLite and on a real PostgreSQL: lifecycle, refusals, concurrency, migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from medimg_hub.db.migrations import upgrade
from medimg_hub.pipeline import JobStatus, TaskStatus, TaskStore, derive_task_status
from medimg_hub.db.migrations import VERSION_TABLE, current_revision, head_revision
from medimg_hub.db import Base, make_engine
from medimg_kernel.errors import ConfigurationError, ParameterError
from medimg_hub.errors import InvalidTransitionError, NotJobOwnerError, SchemaVersionError, TaskNotFoundError
from medimg_kernel.pipeline import PipelineDescriptor, RetryPolicy, StageDescriptor, load_pipeline

from .postgres import PostgresServer, postgres_available

REPO = Path(__file__).resolve().parents[2]
UID = "1.2.826.0.1.3680043.8.498.7"
S = JobStatus


class FakeClock:
    """A clock the test moves by hand (timezone-aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
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
def empty_url(request, tmp_path) -> str:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def db_url(empty_url) -> str:
    upgrade(empty_url)
    return empty_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url, clock) -> Iterator[TaskStore]:
    with TaskStore(db_url, clock=clock) as opened:
        yield opened


@pytest.fixture(scope="module")
def echo() -> PipelineDescriptor:
    return load_pipeline(REPO / "notebooks" / "pipelines" / "example-echo")


@pytest.fixture(scope="module")
def three_stage() -> PipelineDescriptor:
    """segment (auto, 3 attempts, backoff 10 s ×3) → review (manual) → publish (auto)."""
    return PipelineDescriptor("three", (
        StageDescriptor("segment", "auto", notebook="s.ipynb", worker_group="liver",
                        retry=RetryPolicy(max_attempts=3, backoff_s=10, backoff_factor=3, max_backoff_s=100)),
        StageDescriptor("review", "manual", dashboard="review", depends_on=("segment",)),
        StageDescriptor("publish", "auto", notebook="p.ipynb", depends_on=("review",)),
    ))


def _new(store: TaskStore, pipeline: PipelineDescriptor, owner: str = "alice", **kw):
    params = {"series_instance_uid": UID} if pipeline.id == "example-echo" else {}
    return store.create_task(pipeline, params, owner=owner, dataset=kw.pop("dataset", "site-a"), **kw)


def _statuses(store: TaskStore, task_id: str) -> dict[str, JobStatus]:
    return {j.stage_id: j.status for j in store.get_task(task_id).jobs}


# --- migrations -----------------------------------------------------------------------------------


def test_migrations_create_the_schema_of_the_models(empty_url):
    upgrade(empty_url)
    upgrade(empty_url)  # idempotent
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, Base.metadata) == [], "models and migrations differ: add a revision"
    finally:
        engine.dispose()


def test_a_database_not_at_head_is_refused_naming_the_command(empty_url):
    with pytest.raises(SchemaVersionError, match=r"has no task-store schema.*python -m medimg_hub.db.migrations upgrade") as info:
        TaskStore(empty_url)
    assert info.value.current is None and info.value.head == head_revision()
    engine = make_engine(empty_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL)")
        connection.exec_driver_sql(f"INSERT INTO {VERSION_TABLE} VALUES ('0000old')")
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="is at revision 0000old"):
        TaskStore(empty_url)


# --- lifecycle ------------------------------------------------------------------------------------


def test_full_lifecycle_with_history(store, echo, clock):
    task = _new(store, echo, study_instance_uid="1.2.3")
    assert task.status is TaskStatus.QUEUED and task.owner == "alice" and task.dataset == "site-a"
    assert task.parameters == {"message": "hello", "repeat": 1, "series_instance_uid": UID}
    assert task.series_instance_uid == UID and task.study_instance_uid == "1.2.3"
    echo_job, review = task.jobs
    assert (echo_job.status, review.status) == (S.QUEUED, S.PENDING)
    assert echo_job.parameters == task.parameters and review.parameters == {"series_instance_uid": UID}
    assert echo_job.max_attempts == 2 and echo_job.timeout_s == 60.0 and echo_job.worker_group == "default"

    clock.advance(1)
    running = store.execution.claim(echo_job.id, "worker-1")
    assert running is not None and running.status is S.RUNNING and running.attempts == 1
    assert running.worker_id == "worker-1" and running.started_at == clock.now
    assert store.get_task(task.id).status is TaskStatus.RUNNING
    clock.advance(5)
    assert store.execution.heartbeat(echo_job.id, "worker-1").heartbeat_at == clock.now
    store.execution.succeed(echo_job.id, "worker-1", {"echo": "hello"})
    assert _statuses(store, task.id) == {"echo": S.SUCCEEDED, "review": S.WAITING_REVIEW}
    assert store.get_task(task.id).status is TaskStatus.WAITING_REVIEW
    assert store.list_jobs(status=S.WAITING_REVIEW, dataset="site-a")[0].id == review.id
    assert store.list_jobs(status=S.WAITING_REVIEW, dataset="site-b") == []

    decided = store.decide(review.id, "accepted", actor="dr-bob", reason="looks right")
    assert decided.status is S.ACCEPTED and decided.decided_by == "dr-bob" and decided.finished_at == clock.now
    final = store.get_task(task.id)
    assert final.status is TaskStatus.SUCCEEDED and final.job("echo").outputs == {"echo": "hello"}

    rows = [(h.actor, h.from_status, h.to_status) for h in store.history(task_id=task.id)]
    assert rows == [
        ("alice", None, S.QUEUED), ("alice", None, S.PENDING),
        ("worker-1", S.QUEUED, S.RUNNING), ("worker-1", S.RUNNING, S.SUCCEEDED),
        ("worker-1", S.PENDING, S.WAITING_REVIEW), ("dr-bob", S.WAITING_REVIEW, S.ACCEPTED),
    ]
    assert store.history(job_id=review.id)[-1].detail == "looks right"
    assert all(h.at.tzinfo is not None and h.at.utcoffset() == timedelta(0) for h in store.history(task_id=task.id))


def test_invalid_parameters_store_nothing(store, echo):
    with pytest.raises(ParameterError, match="not a DICOM UID"):
        store.create_task(echo, {"series_instance_uid": "abc"}, owner="alice")
    with pytest.raises(ParameterError, match="is required"):
        store.create_task(echo, {}, owner="alice")
    with pytest.raises(ConfigurationError, match="actor"):
        store.create_task(echo, {"series_instance_uid": UID}, owner="")
    assert store.list_tasks() == []


def test_illegal_transitions_are_refused_and_leave_no_trace(store, echo):
    task = _new(store, echo)
    echo_job, review = task.jobs
    before = store.history(task_id=task.id)
    with pytest.raises(NotJobOwnerError, match="does not hold it"):
        store.execution.succeed(echo_job.id, "worker-1")  # queued, never claimed
    with pytest.raises(InvalidTransitionError, match="manual jobs are not run by workers"):
        store.execution.claim(review.id, "worker-1")
    with pytest.raises(InvalidTransitionError, match="only manual stages are decided"):
        store.decide(echo_job.id, "accepted", actor="dr-bob")
    with pytest.raises(InvalidTransitionError, match="pending to accepted"):
        store.decide(review.id, "accepted", actor="dr-bob")  # not waiting_review yet
    assert store.execution.claim(echo_job.id, "worker-1") is not None
    with pytest.raises(NotJobOwnerError):
        store.execution.succeed(echo_job.id, "worker-2")
    with pytest.raises(NotJobOwnerError):
        store.execution.heartbeat(echo_job.id, "worker-2")
    store.execution.succeed(echo_job.id, "worker-1")
    with pytest.raises(InvalidTransitionError, match="a decision is one of"):
        store.decide(review.id, "approved", actor="dr-bob")
    with pytest.raises(ConfigurationError, match="actor"):
        store.decide(review.id, "accepted", actor=" ")
    store.decide(review.id, "rejected", actor="dr-bob")
    with pytest.raises(InvalidTransitionError, match="rejected is final"):
        store.decide(review.id, "accepted", actor="dr-carol")
    with pytest.raises(InvalidTransitionError, match="is final"):
        store.cancel_job(echo_job.id, actor="alice")
    with pytest.raises(TaskNotFoundError):
        store.get_job("no-such-job")
    transitions = store.history(task_id=task.id)[len(before):]
    assert [(h.from_status, h.to_status) for h in transitions] == [
        (S.QUEUED, S.RUNNING), (S.RUNNING, S.SUCCEEDED), (S.PENDING, S.WAITING_REVIEW), (S.WAITING_REVIEW, S.REJECTED),
    ]
    assert store.get_task(task.id).status is TaskStatus.REJECTED


def test_two_concurrent_claims_exactly_one_wins(db_url, clock, echo):
    stores = [TaskStore(db_url, clock=clock), TaskStore(db_url, clock=clock)]
    try:
        jobs = [_new(stores[0], echo).jobs[0].id for _ in range(8)]
        for job_id in jobs:
            barrier = threading.Barrier(2)
            results: dict[str, object] = {}

            def claim(i: int, job_id: str = job_id, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                results[f"w{i}"] = stores[i].execution.claim(job_id, f"w{i}")

            threads = [threading.Thread(target=claim, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            winners = [w for w, r in results.items() if r is not None]
            assert len(results) == 2 and len(winners) == 1, results
            job = stores[0].get_job(job_id)
            assert job.worker_id == winners[0] and job.attempts == 1
            claims = [h for h in stores[0].history(job_id=job_id) if h.to_status is S.RUNNING]
            assert len(claims) == 1
    finally:
        for opened in stores:
            opened.close()


def test_stale_heartbeats_are_found_and_recovered(store, echo, clock):
    task = _new(store, echo)
    job_id = task.jobs[0].id
    store.execution.claim(job_id, "worker-1")
    clock.advance(50)
    store.execution.heartbeat(job_id, "worker-1")
    clock.advance(50)
    assert store.execution.stale_jobs(stale_after_s=60) == []
    clock.advance(20)
    assert [j.id for j in store.execution.stale_jobs(stale_after_s=60)] == [job_id]
    clock.advance(1)
    store.execution.heartbeat(job_id, "worker-1")  # the worker came back before the reconciler acted
    assert store.execution.recover_stale(job_id, stale_after_s=60) is None
    clock.advance(61)
    requeued = store.execution.recover_stale(job_id, stale_after_s=60, actor="reconciler")
    assert requeued.status is S.QUEUED and requeued.worker_id is None and "stopped sending heartbeats" in requeued.error
    assert requeued.eligible_at == clock.now + timedelta(seconds=5)  # example-echo: backoff 5 s
    with pytest.raises(NotJobOwnerError):
        store.execution.heartbeat(job_id, "worker-1")  # the old worker must stop: the job is no longer its
    assert store.execution.claim(job_id, "worker-2") is None  # not eligible yet
    clock.advance(5)
    assert store.execution.claim(job_id, "worker-2").attempts == 2
    clock.advance(100)
    failed = store.execution.recover_stale(job_id, stale_after_s=60)
    assert failed.status is S.FAILED and failed.attempts == 2
    assert _statuses(store, task.id) == {"echo": S.FAILED, "review": S.CANCELLED}
    assert store.get_task(task.id).status is TaskStatus.FAILED
    actors = [h.actor for h in store.history(job_id=job_id) if h.from_status is S.RUNNING]
    assert actors == ["reconciler", "reconciler"]


def test_retries_honour_attempts_and_backoff(store, three_stage, clock):
    task = _new(store, three_stage)
    job_id = task.job("segment").id
    delays = []
    for attempt in (1, 2):
        assert store.execution.claim(job_id, "w").attempts == attempt
        job = store.execution.fail(job_id, "w", f"boom {attempt}")
        assert job.status is S.QUEUED and job.error == f"boom {attempt}"
        delays.append((job.eligible_at - clock.now).total_seconds())
        assert store.execution.jobs_to_dispatch() == [] and store.execution.claim(job_id, "w") is None
        clock.advance(delays[-1])
        assert [j.id for j in store.execution.jobs_to_dispatch(worker_group="liver")] == [job_id]
    assert delays == [10.0, 30.0]
    store.execution.claim(job_id, "w")
    job = store.execution.fail(job_id, "w", "boom 3")
    assert job.status is S.FAILED and job.attempts == 3 and "no attempts left" in store.history(job_id=job_id)[-1].detail
    assert _statuses(store, task.id) == {"segment": S.FAILED, "review": S.CANCELLED, "publish": S.CANCELLED}

    other = _new(store, three_stage).job("segment").id
    store.execution.claim(other, "w")
    assert store.execution.fail(other, "w", "input has no slices", retryable=False).status is S.FAILED


def test_dispatch_bookkeeping(store, echo, clock):
    job_id = _new(store, echo).jobs[0].id
    assert [j.id for j in store.execution.jobs_to_dispatch()] == [job_id]
    store.execution.mark_dispatched(job_id)
    assert store.execution.jobs_to_dispatch() == []
    clock.advance(120)
    assert [j.id for j in store.execution.jobs_to_dispatch(redispatch_after_s=60)] == [job_id]  # message lost
    store.execution.claim(job_id, "w")
    assert store.execution.jobs_to_dispatch(redispatch_after_s=60) == []
    with pytest.raises(InvalidTransitionError, match="only queued jobs"):
        store.execution.mark_dispatched(job_id)


def test_cancel_queued_and_running_jobs(store, three_stage):
    queued = _new(store, three_stage)
    cancelled = store.cancel_task(queued.id, actor="alice", reason="wrong series")
    assert cancelled.status is TaskStatus.CANCELLED
    assert {j.status for j in cancelled.jobs} == {S.CANCELLED}
    assert store.execution.claim(queued.job("segment").id, "w") is None
    assert store.history(job_id=queued.job("segment").id)[-1].detail == "cancelled: wrong series"

    running = _new(store, three_stage)
    seg = running.job("segment").id
    store.execution.claim(seg, "w")
    after = store.cancel_task(running.id, actor="alice")
    assert after.job("segment").status is S.RUNNING and after.job("segment").cancel_requested
    assert after.job("review").status is S.CANCELLED and after.status is TaskStatus.RUNNING
    request = store.history(job_id=seg)[-1]
    assert (request.actor, request.from_status, request.to_status) == ("alice", S.RUNNING, S.RUNNING)
    assert "cancel requested" in request.detail
    assert store.execution.heartbeat(seg, "w").cancel_requested
    assert store.execution.confirm_cancelled(seg, "w").status is S.CANCELLED
    assert store.get_task(running.id).status is TaskStatus.CANCELLED

    retried = _new(store, three_stage).job("segment").id
    store.execution.claim(retried, "w")
    store.cancel_job(retried, actor="alice")
    assert store.execution.fail(retried, "w", "interrupted").status is S.CANCELLED  # no retry after a cancel request


def test_manual_decisions_release_or_cancel_what_follows(store, three_stage):
    def reviewed(decision: str, **kw):
        task = _new(store, three_stage)
        store.execution.claim(task.job("segment").id, "w")
        store.execution.succeed(task.job("segment").id, "w", {"seg_sop_instance_uid": "1.2.3.4"})
        store.decide(task.job("review").id, decision, actor="dr-bob", **kw)
        return store.get_task(task.id)

    corrected = reviewed("corrected", reason="liver tip", outputs={"seg_sop_instance_uid": "1.2.3.5"})
    assert corrected.job("review").outputs == {"seg_sop_instance_uid": "1.2.3.5"}
    assert corrected.job("publish").status is S.QUEUED and corrected.status is TaskStatus.QUEUED
    rejected = reviewed("rejected")
    assert rejected.job("publish").status is S.CANCELLED and rejected.status is TaskStatus.REJECTED
    assert store.history(job_id=rejected.job("publish").id)[-1].actor == "dr-bob"


def test_state_survives_reopening_the_database(db_url, clock, echo):
    with TaskStore(db_url, clock=clock) as first:
        task = _new(first, echo)
        first.execution.claim(task.jobs[0].id, "worker-1")
        before, history = first.get_task(task.id), first.history(task_id=task.id)
    with TaskStore(db_url, clock=clock) as second:
        assert second.get_task(task.id) == before
        assert second.history(task_id=task.id) == history
        assert second.execution.succeed(task.jobs[0].id, "worker-1").status is S.SUCCEEDED


def test_list_tasks_filters(store, echo, three_stage):
    a = _new(store, echo, owner="alice", dataset="site-a")
    b = _new(store, three_stage, owner="bob", dataset="site-b")
    store.cancel_task(b.id, actor="bob")
    assert [t.id for t in store.list_tasks(owner="alice")] == [a.id]
    assert [t.id for t in store.list_tasks(dataset="site-b")] == [b.id]
    assert [t.id for t in store.list_tasks(status="cancelled")] == [b.id]
    assert [t.id for t in store.list_tasks(pipeline_id="example-echo", status=TaskStatus.QUEUED)] == [a.id]
    assert len(store.list_tasks()) == 2 and len(store.list_tasks(limit=1)) == 1


def test_derived_task_status():
    assert derive_task_status([S.SUCCEEDED, S.ACCEPTED]) is TaskStatus.SUCCEEDED
    assert derive_task_status([S.FAILED, S.CANCELLED]) is TaskStatus.FAILED
    assert derive_task_status([S.SUCCEEDED, S.REJECTED, S.CANCELLED]) is TaskStatus.REJECTED
    assert derive_task_status([S.RUNNING, S.WAITING_REVIEW]) is TaskStatus.RUNNING
    assert derive_task_status([S.SUCCEEDED, S.WAITING_REVIEW, S.PENDING]) is TaskStatus.WAITING_REVIEW
    assert derive_task_status([S.SUCCEEDED, S.PENDING]) is TaskStatus.PENDING


def test_sending_a_job_claimed_meanwhile_is_skipped(tmp_path):
    """A worker may claim a job between the dispatcher's query and its send: no error, no message."""
    from medimg_hub.pipeline.queue import send_job
    from medimg_hub.pipeline.store import TaskStore
    from medimg_hub.db.migrations import upgrade
    from medimg_kernel.pipeline import load_pipeline

    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    upgrade(url)
    store = TaskStore(url)
    pipeline = load_pipeline(Path(__file__).resolve().parents[2] / "notebooks" / "pipelines" / "example-echo")
    task = store.create_task(pipeline, {"series_instance_uid": "1.2.3"}, owner="engineer1")
    [job] = store.execution.jobs_to_dispatch()
    assert store.execution.claim(job.id, "worker-a") is not None

    class App:
        sent: list = []
        conf = type("Conf", (), {"task_default_queue": "default"})

        def send_task(self, *args, **kwargs):
            self.sent.append((args, kwargs))

    app = App()
    assert send_job(app, store, job) is False and app.sent == []
    assert store.get_task(task.id).jobs[0].status.value == "running"
    store.close()
