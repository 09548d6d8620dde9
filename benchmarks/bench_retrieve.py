"""Series retrieval through our DICOMweb client vs the floor of any client, and vs dicomweb-client.

Every side fetches the same 200 × 512 × 512 uncompressed CT series (105 MB) from a real Orthanc
on a free loopback port, in one process, interleaved (one round = each side once; medians):

* ours: ``DICOMwebHTTPClient.retrieve_series``: streams and decodes every part into a pydicom Dataset;
* raw socket (the baseline, the floor of any client): the same GET written to a plain TCP socket
  and the response read with ``recv_into`` into one reused 8 MB buffer until Orthanc closes it:
  bytes only, no HTTP parsing beyond the status line, no copies;
* ``requests.get(url).content``: the same response as bytes through requests (what the value
  was measured against before 2026-12-03);
* dicomweb-client's own ``DICOMwebClient.retrieve_series`` with the same authenticated session.
  Version 0.61.2 cannot read Orthanc 1.10's answer (its parts carry no 128-byte preamble and it
  calls ``dcmread`` without ``force``): the result then says so instead of a time.

Result: ``retrieve_vs_raw_http`` = raw-socket time / our time (throughput ratio; goal ≥ 0.8).

Run: ``python benchmarks/bench_retrieve.py``
"""

from __future__ import annotations

import base64
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from pydicom.errors import InvalidDicomError

from benchlib import interleaved_medians, median, write_result
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port
from medimg_hub.settings import PacsSettings, PlatformSettings, Settings
from medimg_kernel.client import ACCEPT_STORED
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume

SHAPE = (200, 512, 512)
REPEATS = 7


def main() -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-retrieve-"))
    server = OrthancServer(Settings(platform=PlatformSettings(var_dir=var_dir), pacs=PacsSettings(http_port=free_port())))
    server.start()
    try:
        rng = np.random.default_rng(0)
        volume = Volume(rng.normal(40, 60, SHAPE).astype(np.int16), (1.0, 0.7, 0.7))
        patient = SyntheticPatient("BENCH001", "PHANTOM^BENCH", "1.2.826.0.1.3680043.8.498.4242")
        series = ct_series_from_volume(volume, patient, uid_entropy=["bench-retrieve"])
        client = server.client()
        for start in range(0, len(series), 50):
            client.store_instances(series[start : start + 50])
        study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        url = f"{server.dicomweb_url}/studies/{study}/series/{series_uid}"
        session = server.session()
        nbytes = len(session.get(url, headers={"Accept": ACCEPT_STORED}).content)

        def ours() -> None:
            got = client.retrieve_series(study, series_uid)
            assert len(got) == SHAPE[0]

        def requests_content() -> None:
            assert len(session.get(url, headers={"Accept": ACCEPT_STORED}).content) == nbytes

        parts = urlsplit(url)
        account = server.credentials()
        credentials = base64.b64encode(f"{account.username}:{account.password}".encode()).decode()
        request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Basic {credentials}\r\n"
                   f"Accept: {ACCEPT_STORED}\r\nConnection: close\r\n\r\n").encode()
        buffer = memoryview(bytearray(8 << 20))

        def raw_socket() -> None:
            with socket.create_connection((parts.hostname, parts.port)) as sock:
                sock.sendall(request)
                received = 0
                while n := sock.recv_into(buffer):
                    if received == 0:
                        assert bytes(buffer[:12]) == b"HTTP/1.1 200"
                    received += n
            assert received > nbytes  # the head, then the body (chunked framing adds a little)

        from dicomweb_client.api import DICOMwebClient

        theirs_client = DICOMwebClient(server.dicomweb_url, session=server.session())

        def dicomweb_client() -> None:
            got = theirs_client.retrieve_series(study, series_uid, media_types=(("application/dicom", "*"),))
            assert len(got) == SHAPE[0]

        sides = {"ours": ours, "raw_socket": raw_socket, "requests": requests_content,
                 "dicomweb_client": dicomweb_client}
        failed: dict[str, str] = {}
        for name, side in list(sides.items()):  # warm every path (page cache, imports); drop a side that fails
            try:
                side()
            except InvalidDicomError as exc:
                failed[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
                del sides[name]
        check = {str(d.SOPInstanceUID): d for d in client.retrieve_series(study, series_uid)}
        assert np.array_equal(check[str(series[7].SOPInstanceUID)].pixel_array, series[7].pixel_array)
        times = interleaved_medians(sides, REPEATS)
        t = {name: median(values) for name, values in times.items()}
        mb = nbytes / 1e6
        write_result(
            "retrieve_vs_raw_http",
            value=round(t["raw_socket"] / t["ours"], 2),
            goal=">= 0.8",
            unit="x raw-socket throughput",
            command="python benchmarks/bench_retrieve.py",
            details={
                "series": f"{SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]} CT, explicit VR little endian, {mb:.1f} MB",
                **{f"{name}_median_s": round(value, 4) for name, value in t.items()},
                **{f"{name}_MB_per_s": round(mb / value, 1) for name, value in t.items()},
                "ratio_vs_requests_content": round(t["requests"] / t["ours"], 2),
                **({"ratio_vs_dicomweb_client": round(t["dicomweb_client"] / t["ours"], 2)}
                   if "dicomweb_client" in t else {"dicomweb_client_failed": failed.get("dicomweb_client")}),
                "raw_socket": "GET on a plain TCP socket, recv_into one reused 8 MB buffer until close: the floor",
                "requests": "requests.get(url).content: the multipart bytes through requests, no parsing",
                "dicomweb_client": "dicomweb_client.DICOMwebClient.retrieve_series, same session",
                "ours": "medimg_kernel DICOMwebHTTPClient.retrieve_series: streamed, every part a pydicom Dataset",
                "repeats": REPEATS,
                "server": "Orthanc 1.10.1 + DICOMweb 1.7 on loopback",
            },
        )
        print(f"retrieve_vs_raw_http: {t['raw_socket'] / t['ours']:.2f}x of the raw-socket floor (ours {t['ours']:.3f} s, "
              f"socket {t['raw_socket']:.3f} s, requests {t['requests']:.3f} s, {mb:.0f} MB); "
              f"dicomweb-client: {t.get('dicomweb_client', failed.get('dicomweb_client'))}")
    finally:
        server.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
