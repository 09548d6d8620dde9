"""The platform API's DICOMweb gateway vs Orthanc directly, with the same client.

A real Orthanc, a real JupyterHub + configurable-http-proxy and the platform API as its managed
service (tests/hub/hubfixture.py's test configuration), on free loopback ports. One
200 × 512 × 512 CT series (105 MB) in a dataset the benchmark user may read.

* ``gateway_throughput``: ``DICOMwebHTTPClient.retrieve_series`` on the route a kernel takes
  (the ``MEDIMG_DICOMWEB_URL`` that :func:`medimg_hub.hubconf.routes.kernel_environment` gives
  every user's server: the platform API's own port, authenticated with a hub token: auth, grant
  check, audit, splice relay) vs straight to Orthanc (basic auth), interleaved; value = direct
  median time / kernel-route median time. The same through the hub's proxy (the browsers' URL,
  which kernels no longer use) is in the details.
  Each round runs the three routes back to back, the first route rotating from round to round;
  the value is the median over rounds of the round's direct / kernel-route time (paired ratios:
  a round's routes see the same machine load, which on a shared 2-core VM drifts by ±20 % from
  one minute to the next).
* ``gateway_qido_p95_overhead_ms``: QIDO-RS ``search_for_studies`` p95 latency on the kernel's
  route minus direct, in ms (goal: at most 5 ms + 5 % of the direct p95).
* ``qido_series_ms``: the worklist's query, QIDO-RS series within a study (``search_for_series``)
  of a study holding a CT series, a SEG and an SR, on the kernel's route: p50 of one client
  (the value; goal ≤ 20 ms), and p50/p95 with 6 clients querying at once (threads, each with
  its own session), beside the same straight to Orthanc.

Run: ``python benchmarks/bench_gateway.py``
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import median, timed, write_result  # noqa: E402
from medimg_hub.hubconf.routes import kernel_environment  # noqa: E402
from medimg_hub.pacs.ingest import ingest_files  # noqa: E402
from medimg_hub.pacs.orthanc import OrthancServer  # noqa: E402
from medimg_hub.access.datasets import ingest_assigner, seed_datasets  # noqa: E402
from medimg_hub.servers.process import free_port  # noqa: E402
from medimg_hub.settings import (DatasetSettings, HubSettings, PacsSettings, PlatformSettings,  # noqa: E402
                                 QueueSettings, Settings, TasksSettings)
from medimg_hub.db.migrations import upgrade  # noqa: E402
from medimg_hub.db import make_engine  # noqa: E402
from medimg_kernel.client import DICOMwebHTTPClient  # noqa: E402
from medimg_kernel.seg import AlgorithmIdentification, write_seg  # noqa: E402
from medimg_kernel.series import read_series  # noqa: E402
from medimg_kernel.sr import write_sr  # noqa: E402
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume  # noqa: E402
from medimg_kernel.volume import Volume  # noqa: E402
from tests.hub.hubfixture import PlatformHub  # noqa: E402

SHAPE = (200, 512, 512)
ROUNDS = 15
QIDO_REQUESTS = 600
SERIES_REQUESTS = 200
CONCURRENT_CLIENTS = 6
CONCURRENT_REQUESTS = 50


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def _setup(var_dir: Path) -> tuple[OrthancServer, Settings, str, str]:
    pacs = OrthancServer(Settings(platform=PlatformSettings(var_dir=var_dir), pacs=PacsSettings(http_port=free_port())))
    pacs.start()
    settings = Settings(
        platform=PlatformSettings(var_dir=var_dir), pacs=pacs.settings.pacs,
        tasks=TasksSettings(database_url=f"sqlite:///{var_dir / 'platform.db'}"), queue=QueueSettings(broker_url="memory://"),
        datasets=(DatasetSettings("bench", "benchmark", "BENCHSITE", read=("bench-readers",)),),
        hub=HubSettings(port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
                        platform_api_port=free_port(), spawner="shared"),
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(40, 60, SHAPE).astype(np.int16), (1.0, 0.7, 0.7))
    patient = SyntheticPatient("BENCH002", "PHANTOM^GATEWAY", "1.2.826.0.1.3680043.8.498.4243", institution_name="BENCHSITE")
    series = ct_series_from_volume(volume, patient, uid_entropy=["bench-gateway"])
    files = var_dir / "dicom"
    files.mkdir()
    paths = []
    for i, ds in enumerate(series):
        paths.append(files / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    ingest_files(pacs.client(), paths, assign=ingest_assigner(engine))
    engine.dispose()
    _add_results(pacs, series)
    return pacs, settings, str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)


def _add_results(pacs: OrthancServer, series: list) -> None:
    """A model's SEG and SR in the study, as a pipeline leaves them (the worklist lists them)."""
    volume = read_series(series)
    labels = np.zeros(volume.shape, np.uint8)
    labels[60:140, 150:350, 150:350] = 1
    labels[80:120, 200:260, 380:440] = 2
    seg = write_seg(volume, labels, ["liver", "spleen"], type_id="organs",
                    algorithm=AlgorithmIdentification("bench", "1"))
    pacs.client().store_instances([seg, write_sr(seg, volume, labels)])


def _series_latencies(client_for: Callable[[], DICOMwebHTTPClient], study: str, clients: int,
                      requests_each: int) -> list[float]:
    """Seconds per ``search_for_series(study)``, ``clients`` threads at once, each its own client."""
    barrier = threading.Barrier(clients)

    def run() -> list[float]:
        client = client_for()
        assert len(client.search_for_series(study)) == 3
        barrier.wait()
        out = []
        for _ in range(requests_each):
            start = time.perf_counter()
            client.search_for_series(study)
            out.append(time.perf_counter() - start)
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [t for times in pool.map(lambda _: run(), range(clients)) for t in times]


def _token_session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    return session


def main() -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    pacs, settings, study, series_uid = _setup(var_dir)
    hub = PlatformHub(var_dir, settings, service_port=settings.hub.platform_api_port)
    try:
        hub.start()
        hub.add_user("bob", ("bench-readers",))
        token = hub.new_token("bob")
        session = _token_session(token)
        kernel_url = kernel_environment(settings)["MEDIMG_DICOMWEB_URL"]
        clients = {"direct": pacs.client(),
                   "gateway": DICOMwebHTTPClient(kernel_url, session=session),
                   "proxy": DICOMwebHTTPClient(hub.platform_url + "dicom-web", session=session)}

        def retrieve(name: str):
            def run() -> None:
                assert len(clients[name].retrieve_series(study, series_uid)) == SHAPE[0]
            return run

        for name in clients:  # warm: page cache, connections, token caches
            retrieve(name)()
        names = list(clients)
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(ROUNDS):  # the first route rotates: no route always runs on a cold cache
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                times[name].append(timed(retrieve(name)))
        qido: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(QIDO_REQUESTS):
            for name, client in clients.items():
                start = time.perf_counter()
                assert len(client.search_for_studies()) == 1
                qido[name].append(time.perf_counter() - start)
        routes = {"direct": pacs.client,
                  "gateway": lambda: DICOMwebHTTPClient(kernel_url, session=_token_session(token))}
        series_single = {name: _series_latencies(make, study, 1, SERIES_REQUESTS) for name, make in routes.items()}
        series_many = {name: _series_latencies(make, study, CONCURRENT_CLIENTS, CONCURRENT_REQUESTS)
                       for name, make in routes.items()}
        _report(times, qido, pacs, study, series_uid)
        _report_series(series_single, series_many)
    finally:
        hub.stop()
        pacs.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


def _report(times: dict[str, list[float]], qido: dict[str, list[float]], pacs: OrthancServer, study: str,
            series_uid: str) -> None:
    size = len(pacs.session().get(f"{pacs.dicomweb_url}/studies/{study}/series/{series_uid}",
                                  headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}).content)
    t = {name: median(v) for name, v in times.items()}
    paired = sorted(d / g for d, g in zip(times["direct"], times["gateway"]))
    ratio = median(paired)
    common = {"series": f"{SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]} CT, {size / 1e6:.1f} MB", "rounds": ROUNDS,
              "client": "medimg_kernel.client.DICOMwebHTTPClient", "server": "Orthanc 1.10.1 + DICOMweb 1.7, loopback",
              "hub": "JupyterHub 6.1.1 + configurable-http-proxy, platform API as managed service",
              "route": "the kernel's MEDIMG_DICOMWEB_URL: the platform API's own port (not the hub's proxy)"}
    write_result("gateway_throughput", value=round(ratio, 3), goal=">= 0.9", unit="x direct throughput",
                 command="python benchmarks/bench_gateway.py", details={
                     **common, "method": "median over rounds of direct / kernel-route time within the round; "
                                         "the routes run back to back in each round, the first one rotating",
                     "round_ratio_quartiles": [round(float(q), 3) for q in np.percentile(paired, [25, 50, 75])],
                     "ratio_of_medians": round(t["direct"] / t["gateway"], 3),
                     "gateway_median_s": round(t["gateway"], 4), "direct_median_s": round(t["direct"], 4),
                     "via_proxy_median_s": round(t["proxy"], 4), "via_proxy_ratio": round(t["direct"] / t["proxy"], 3),
                     "gateway_MB_per_s": round(size / 1e6 / t["gateway"], 1),
                     "direct_MB_per_s": round(size / 1e6 / t["direct"], 1)})
    p95 = {name: _p95(v) * 1000 for name, v in qido.items()}
    overhead = p95["gateway"] - p95["direct"]
    allowance = 5.0 + 0.05 * p95["direct"]
    write_result("gateway_qido_p95_overhead_ms", value=round(overhead, 2), goal="<= 5 ms + 5%", unit="ms",
                 command="python benchmarks/bench_gateway.py", details={
                     **common, "requests_each": QIDO_REQUESTS, "direct_p95_ms": round(p95["direct"], 2),
                     "gateway_p95_ms": round(p95["gateway"], 2), "via_proxy_p95_ms": round(p95["proxy"], 2),
                     "via_proxy_overhead_ms": round(p95["proxy"] - p95["direct"], 2),
                     "allowance_ms": round(allowance, 2), "allowance": "5 ms absolute + 5% of the direct p95",
                     "absolute_part_ms": 5.0, "relative_part_ms": round(0.05 * p95["direct"], 3),
                     "meets_goal": overhead <= allowance,
                     "direct_median_ms": round(statistics.median(qido["direct"]) * 1000, 2),
                     "gateway_median_ms": round(statistics.median(qido["gateway"]) * 1000, 2)})
    print(f"gateway_throughput: {ratio:.3f} (gateway {t['gateway']:.3f} s, direct {t['direct']:.3f} s, "
          f"proxy {t['proxy']:.3f} s); QIDO p95 overhead {overhead:.2f} ms (allowance {allowance:.2f} ms)")


def _report_series(single: dict[str, list[float]], many: dict[str, list[float]]) -> None:
    def ms(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)) * 1000, 2)

    value = ms(single["gateway"], 50)
    write_result("qido_series_ms", value=value, goal="<= 20", unit="ms (p50, one client)",
                 command="python benchmarks/bench_gateway.py", details={
                     "query": "QIDO-RS series of one study (search_for_series): a 200-image CT series, a SEG, an SR",
                     "route": "the kernel's MEDIMG_DICOMWEB_URL (platform API's own port, hub token), "
                              "with Orthanc's answer filtered to the caller's datasets",
                     "one_client": {"requests": SERIES_REQUESTS, "gateway_p50_ms": value,
                                    "gateway_p95_ms": ms(single["gateway"], 95),
                                    "direct_p50_ms": ms(single["direct"], 50), "direct_p95_ms": ms(single["direct"], 95)},
                     "concurrent": {"clients": CONCURRENT_CLIENTS, "requests_each": CONCURRENT_REQUESTS,
                                    "gateway_p50_ms": ms(many["gateway"], 50), "gateway_p95_ms": ms(many["gateway"], 95),
                                    "direct_p50_ms": ms(many["direct"], 50), "direct_p95_ms": ms(many["direct"], 95)},
                     "server": "Orthanc 1.10.1 + DICOMweb 1.7 (answers series QIDO from one file per series)",
                     "clients_as": "threads in the benchmark process, each with its own requests session"})
    print(f"qido_series_ms: p50 {value} ms one client (direct {ms(single['direct'], 50)} ms); "
          f"{CONCURRENT_CLIENTS} clients p50 {ms(many['gateway'], 50)} / p95 {ms(many['gateway'], 95)} ms "
          f"(direct {ms(many['direct'], 50)} / {ms(many['direct'], 95)} ms)")


if __name__ == "__main__":
    main()
