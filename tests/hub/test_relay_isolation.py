"""Stress: WADO-RS retrieves abandoned at random points never send a byte to another connection.

Regression test of the relay leak (SECURITY.md, 2026-12): the splice relay wrote to the caller's
descriptor number after tornado had closed it, and the next accepted connection, another user's,
received the rest of the body. Here real processes (Orthanc, JupyterHub with
configurable-http-proxy, the platform API) serve several users at once, directly on the platform
API's port and through the hub's proxy, while one user abandons 500 retrieves after the response
head, inside a part's header or inside the pixel data. Every other response must be a
well-formed HTTP answer to the request that was sent, with no UID of a study outside the
caller's grant, and the proxy must log no error.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.access.datasets import ingest_assigner
from medimg_hub.db import make_engine
from medimg_kernel.client import ACCEPT_STORED

from .hubfixture import DemoStudy, Platform, make_study, platform_hub, wait_for_audit  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ABORTED_RETRIEVES = 500
NORMAL_REQUESTS = 2000
THREADS = 12
#: Larger series than the platform fixture's, so that aborts can land deep inside the pixel data.
BIG_STUDIES = {"rel-a-big1": ("SITEA", 24, 160), "rel-a-big2": ("SITEA", 16, 192),
               "rel-b-big1": ("SITEB", 20, 160), "rel-b-big2": ("SITEB", 12, 128)}
#: A series larger than what loopback socket buffers hold (~10 MB), so that a caller who leaves early
#: is noticed by the relay (a smaller body may already sit whole in the buffers when the caller closes).
HUGE_STUDY = ("rel-a-huge", "SITEA", 64, 512)


@dataclass(frozen=True)
class Caller:
    name: str
    token: str
    readable: tuple[DemoStudy, ...]  # the studies its requests are about
    forbidden: tuple[bytes, ...]  # UIDs of every study outside the grant
    visible: frozenset[str]  # UIDs of every study inside it (QIDO finds them all)


@dataclass(frozen=True)
class Load:
    platform: Platform
    direct: tuple[str, int, str]  # host, port, path prefix of the platform API
    proxied: tuple[str, int, str]
    callers: dict[str, Caller]
    huge: DemoStudy  # site-a, ~33 MB; not used by the stress test


def _prefix(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    return host, int(port), "/" + path


@pytest.fixture(scope="module")
def relay_load(platform_hub: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Load]:  # noqa: F811
    p = platform_hub
    folder = tmp_path_factory.mktemp("relay-studies")
    studies = dict(p.studies)
    paths: list[Path] = []
    huge_key = HUGE_STUDY[0]
    for key, (institution, n_slices, size) in {**BIG_STUDIES, huge_key: HUGE_STUDY[1:]}.items():
        series = make_study(institution, key, n_slices=n_slices, size=size)
        for i, ds in enumerate(series):
            path = folder / f"{key}-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        studies[key] = DemoStudy(str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID),
                                 tuple(str(d.SOPInstanceUID) for d in series),
                                 {"SITEA": "site-a", "SITEB": "site-b"}[institution])
    engine = make_engine(p.settings.database_url)
    try:
        ingest_files(p.orthanc.client(), paths, assign=ingest_assigner(engine))
    finally:
        engine.dispose()

    huge = studies.pop(huge_key)

    def caller(role: str, dataset: str) -> Caller:
        mine = tuple(s for s in studies.values() if s.dataset == dataset)
        others = tuple(s.study.encode() for s in (*studies.values(), huge) if s.dataset != dataset)
        visible = frozenset(s.study for s in (*studies.values(), huge) if s.dataset == dataset)
        return Caller(role, p.tokens[role], mine, others, visible)

    yield Load(p, _prefix(p.hub.direct_url), _prefix(p.hub.platform_url),
               {"a": caller("resident", "site-a"), "b": caller("other-site", "site-b"),
                "e": caller("engineer", "site-a")}, huge)


# --- one aborted retrieve -------------------------------------------------------------------------

def _abort_retrieve(route: tuple[str, int, str], who: Caller, study: DemoStudy, where: str, rng: random.Random,
                    request_ids: list[str] | None = None) -> str:
    """Send a WADO-RS retrieve on a fresh socket and close it at ``where``; returns what was seen
    (and appends the answer's X-Request-Id to ``request_ids``)."""
    host, port, prefix = route
    path = f"{prefix}dicom-web/studies/{study.study}/series/{study.series}"
    with socket.create_connection((host, port), timeout=30) as sock:
        if rng.random() < 0.5:  # half of them end with a reset instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: token {who.token}\r\n"
                     f"Accept: {ACCEPT_STORED}\r\n\r\n".encode())
        seen = b""
        while b"\r\n\r\n" not in seen:
            data = sock.recv(65536)
            if not data:
                return "closed before the head"
            seen += data
        assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
        head, rest = seen.split(b"\r\n\r\n", 1)
        if request_ids is not None:
            request_ids += [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                            if line.lower().startswith(b"x-request-id:")]
        body = len(rest)
        want = {"head": 0, "part": rng.randint(1, 600), "pixels": rng.randint(20_000, 1_200_000)}[where]
        while body < want:
            data = sock.recv(min(65536, want - body))
            if not data:
                break
            body += len(data)
    return where


# --- one normal request ---------------------------------------------------------------------------

class Checker:
    """Sends normal requests on kept-alive connections and checks every answer."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.local = threading.local()

    def _connection(self, route: tuple[str, int, str], fresh: bool) -> http.client.HTTPConnection:
        pool = self.local.__dict__.setdefault("pool", {})
        conn = pool.get(route[1])
        if fresh or conn is None:
            if conn is not None:
                conn.close()
            conn = pool[route[1]] = http.client.HTTPConnection(route[0], route[1], timeout=30)
        return conn

    def request(self, route: tuple[str, int, str], who: Caller, kind: str, study: DemoStudy, fresh: bool) -> str:
        paths = {
            "qido-studies": ("dicom-web/studies", "application/dicom+json"),
            "qido-series": (f"dicom-web/studies/{study.study}/series", "application/dicom+json"),
            "qido-instances": (f"dicom-web/studies/{study.study}/series/{study.series}/instances",
                               "application/dicom+json"),
            "wado-series": (f"dicom-web/studies/{study.study}/series/{study.series}", ACCEPT_STORED),
            "wado-metadata": (f"dicom-web/studies/{study.study}/series/{study.series}/metadata",
                              "application/dicom+json"),
        }
        path, accept = paths[kind]
        conn = self._connection(route, fresh)
        try:
            conn.request("GET", route[2] + path, headers={"Authorization": f"token {who.token}", "Accept": accept})
            response = conn.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            self.local.pool.pop(route[1], None)
            raise AssertionError(f"{kind} of {who.name} on port {route[1]}: not a well-formed HTTP answer "
                                 f"({type(exc).__name__}: {str(exc)[:200]!r})") from None
        if response.will_close:
            conn.close()
            self.local.pool.pop(route[1], None)
        where = f"{kind} of {who.name} on port {route[1]}"
        assert response.status == 200, f"{where}: {response.status} {body[:200]!r}"
        leaked = [uid for uid in who.forbidden if uid in body]
        assert not leaked, f"{where}: the answer holds {len(leaked)} UIDs of studies outside the grant"
        if kind.startswith("qido") or kind == "wado-metadata":
            assert response.getheader("Content-Type", "").startswith("application/dicom+json"), where
            items = json.loads(body)
            found = {item["0020000D"]["Value"][0] for item in items if "0020000D" in item}
            mine = who.visible
            assert found <= mine, where
            if kind == "qido-studies":
                assert found == mine, where
            elif kind == "qido-series":  # other tests of the session may have added series to the study
                series = {item["0020000E"]["Value"][0] for item in items}
                assert found == {study.study} and study.series in series, where
            else:
                assert found == {study.study} and len(items) == len(study.sops), where
        else:
            assert response.getheader("Content-Type", "").startswith("multipart/related"), where
            assert body.count(b"DICM") == len(study.sops) and study.series.encode() in body, where
        return kind


def _proxy_errors(log_path: Path, offset: int) -> list[str]:
    text = log_path.read_bytes()[offset:].decode(errors="replace")
    return [line for line in text.splitlines()
            if "ConfigProxy" in line and ("error" in line.lower() or " 503 " in line or " 502 " in line)]


def test_retrieves_abandoned_at_random_points_never_reach_another_connection(relay_load: Load) -> None:
    load, rng = relay_load, random.Random(20261203)
    log_path = load.platform.hub.dir / "hub.log"
    log_offset = log_path.stat().st_size
    a = load.callers["a"]
    big_a = [s for s in a.readable if len(s.sops) > 4]
    jobs: list[tuple[str, tuple]] = []
    for i in range(ABORTED_RETRIEVES):
        route = load.direct if i % 2 else load.proxied
        jobs.append(("abort", (route, a, rng.choice(big_a), ("head", "part", "pixels")[i % 3], random.Random(i))))
    kinds = ("qido-studies", "qido-series", "qido-instances", "wado-series", "wado-metadata")
    for i in range(NORMAL_REQUESTS):
        who = load.callers[("b", "b", "e", "a")[i % 4]]
        route = load.direct if (i // 4) % 2 else load.proxied
        jobs.append(("normal", (route, who, kinds[i % len(kinds)], rng.choice(who.readable), rng.random() < 0.3)))
    rng.shuffle(jobs)
    checker = Checker(load)

    def run(job: tuple[str, tuple]) -> str:
        kind, args = job
        return _abort_retrieve(*args) if kind == "abort" else checker.request(*args)

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        done = Counter(pool.map(run, jobs))
    elapsed = time.monotonic() - started
    assert sum(done[k] for k in ("head", "part", "pixels")) == ABORTED_RETRIEVES, done
    assert sum(done[k] for k in kinds) == NORMAL_REQUESTS, done
    assert not _proxy_errors(log_path, log_offset), _proxy_errors(log_path, log_offset)[:5]
    print(f"{len(jobs)} requests in {elapsed:.1f} s: {dict(done)}")


def test_abandoned_retrieves_are_audited_with_how_far_they_got(relay_load: Load) -> None:
    load = relay_load
    a, study = load.callers["a"], load.huge
    request_ids: list[str] = []
    _abort_retrieve(load.direct, a, study, "head", random.Random(7), request_ids)
    assert len(request_ids) == 1
    row = wait_for_audit(load.platform.hub, request_ids[0])  # this request's row, not an earlier abort's
    assert str(row["detail"]).startswith("caller closed the connection after"), row
    assert row["study_instance_uid"] == study.study and row["outcome"] == "allowed" and row["user"] == "rita"


def test_a_caller_leaving_mid_stream_passes_fifty_times_under_load(relay_load: Load) -> None:
    """The suite's older test (test_platform_api) that once failed in CI, 50 times, with QIDO load beside it."""
    from .test_platform_api import test_a_caller_leaving_mid_stream_is_audited_and_the_gateway_keeps_serving as once

    load, stop = relay_load, threading.Event()
    checker, errors = Checker(load), []
    b = load.callers["b"]

    def background() -> None:
        i = 0
        while not stop.is_set():
            route = load.direct if i % 2 else load.proxied
            try:
                checker.request(route, b, ("qido-studies", "qido-series")[i % 2], b.readable[i % len(b.readable)],
                                fresh=i % 3 == 0)
            except AssertionError as exc:
                errors.append(str(exc))
            i += 1

    threads = [threading.Thread(target=background) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(50):
            once(load.platform)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors[:3]
