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
* ``gateway_qido_p95_overhead_ms``: QIDO-RS ``search_for_studies`` p95 latency on the kernel's
  route minus direct, in ms (goal: at most 5 ms + 5 % of the direct p95).

Run: ``python benchmarks/bench_gateway.py``
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import interleaved_medians, median, write_result  # noqa: E402
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
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume  # noqa: E402
from medimg_kernel.volume import Volume  # noqa: E402
from tests.hub.hubfixture import PlatformHub  # noqa: E402

SHAPE = (200, 512, 512)
REPEATS = 7
QIDO_REQUESTS = 300


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
    return pacs, settings, str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)


def main() -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    pacs, settings, study, series_uid = _setup(var_dir)
    hub = PlatformHub(var_dir, settings, service_port=settings.hub.platform_api_port)
    try:
        hub.start()
        hub.add_user("bob", ("bench-readers",))
        session = requests.Session()
        session.headers["Authorization"] = f"token {hub.new_token('bob')}"
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
        times = interleaved_medians({name: retrieve(name) for name in clients}, REPEATS)
        qido: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(QIDO_REQUESTS):
            for name, client in clients.items():
                start = time.perf_counter()
                assert len(client.search_for_studies()) == 1
                qido[name].append(time.perf_counter() - start)
        _report(times, qido, pacs, study, series_uid)
    finally:
        hub.stop()
        pacs.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


def _report(times: dict[str, list[float]], qido: dict[str, list[float]], pacs: OrthancServer, study: str,
            series_uid: str) -> None:
    size = len(pacs.session().get(f"{pacs.dicomweb_url}/studies/{study}/series/{series_uid}",
                                  headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}).content)
    t = {name: median(v) for name, v in times.items()}
    ratio = t["direct"] / t["gateway"]
    common = {"series": f"{SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]} CT, {size / 1e6:.1f} MB", "repeats": REPEATS,
              "client": "medimg_kernel.client.DICOMwebHTTPClient", "server": "Orthanc 1.10.1 + DICOMweb 1.7, loopback",
              "hub": "JupyterHub 6.1.1 + configurable-http-proxy, platform API as managed service",
              "route": "the kernel's MEDIMG_DICOMWEB_URL: the platform API's own port (not the hub's proxy)"}
    write_result("gateway_throughput", value=round(ratio, 3), goal=">= 0.9", unit="x direct throughput",
                 command="python benchmarks/bench_gateway.py", details={
                     **common, "gateway_median_s": round(t["gateway"], 4), "direct_median_s": round(t["direct"], 4),
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


if __name__ == "__main__":
    main()
