"""Images in: the DICOM receiver vs a bare Orthanc, and ``medimg import`` vs storescu.

Two results, each a ratio of two sides run in this command on the same files, interleaved (one
round = each side once, medians over ``REPEATS`` rounds; every round sends the files with fresh
Study/Series/SOP Instance UIDs, so no side finds anything already stored):

``cstore_ingest_vs_orthanc``: ``N_CSTORE`` CT instances (512 × 512, 16 bit, explicit VR little
endian) sent by dcmtk's ``storescu`` (one association)

* baseline: to a bare Orthanc's own DICOM port (Orthanc 1.10.1, SQLite index; both it and
  ``storescu`` with ``TCP_NODELAY=1``, without which dcmtk's Nagle/delayed-ACK stall makes the
  baseline ~10x slower): the time is ``storescu``'s run (Orthanc stores each instance before it
  answers);
* ours: to the platform's receiver (``medimg_hub.pacs.receiver``: sender check, routing to a
  dataset by a ``[[routes]]`` rule, every instance synced to the spool before it is acknowledged)
  in front of the same kind of Orthanc (DICOM port off): the time runs until the forwarder has
  stored the last instance in that Orthanc over STOW-RS and emptied the spool, i.e. until the
  study is queryable in its dataset.

Value = baseline time / ours (throughput ratio); goal ≥ 0.9.

``import_vs_storescu``: ``N_IMPORT`` files of the same kind in one folder

* baseline: ``storescu`` of the files to a bare Orthanc's DICOM port;
* ours: ``medimg import``'s work, ``medimg_kernel.importer.import_files`` (headers read first, a
  QIDO per study for what is stored already, STOW-RS batches of 64 MB) into an Orthanc over
  DICOMweb, in this process.

Value = storescu time / ours; goal ≥ 1.0.

Run: ``python benchmarks/bench_intake.py``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from benchlib import median, write_result
from medimg_hub.access.datasets import seed_datasets
from medimg_hub.db import make_engine
from medimg_hub.db.migrations import upgrade
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.pacs.receiver import Receiver
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (DatasetSettings, PacsSettings, PlatformSettings, ReceiverSettings, RouteSettings,
                                 Settings, TasksSettings)
from medimg_kernel.importer import import_files
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume

N_CSTORE = 500
N_IMPORT = 1000
SHAPE = (512, 512)
REPEATS = 5


def _write_series(folder: Path, n: int, template: list) -> int:
    """``n`` instances with fresh UIDs into ``folder``; total bytes."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    size = 0
    for i in range(n):
        ds = template[i % len(template)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        size += path.stat().st_size
    return size


def _storescu(port: int, folder: Path) -> float:
    """``storescu`` with Nagle's algorithm off (``TCP_NODELAY=1``, as Orthanc runs here too): without
    it each C-STORE waits for a delayed ACK and the baseline would be ~10x slower than it can be."""
    started = time.perf_counter()
    proc = subprocess.run(["storescu", "-aet", "CT01", "-aec", "MEDIMG", "+sd", "127.0.0.1", str(port), str(folder)],
                          capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"})
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    return elapsed


def _count(pacs: OrthancServer, folder: Path) -> int:
    import pydicom

    study = str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    return len(pacs.client().search_for_instances(study, fields=["00080018"]))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    bare = OrthancServer(Settings(platform=PlatformSettings(var_dir=work / "bare"),
                                  pacs=PacsSettings(http_port=free_port(), dicom_port=free_port())))
    settings = Settings(platform=PlatformSettings(var_dir=work / "platform"), pacs=PacsSettings(http_port=free_port()),
                        tasks=TasksSettings(database_url=f"sqlite:///{work / 'platform.db'}"),
                        datasets=(DatasetSettings("ct-research", "", ""),),
                        receiver=ReceiverSettings(port=free_port(), senders=("CT01@127.0.0.1",),
                                                  forward_interval_s=0.1),
                        routes=(RouteSettings("ct-research", calling_aet="CT01", match=("Modality=CT",)),))
    upgrade(settings.database_url)
    seed_datasets(make_engine(settings.database_url), settings.datasets)
    platform_pacs = OrthancServer(settings)
    bare.start()
    platform_pacs.start()
    receiver = Receiver(settings, platform_pacs.client())
    receiver.start()
    try:
        rng = np.random.default_rng(0)
        volume = Volume(rng.normal(40, 60, (8, *SHAPE)).astype(np.int16), (1.0, 0.7, 0.7))
        template = ct_series_from_volume(volume, SyntheticPatient("BENCH002", "PHANTOM^INTAKE", generate_uid()))

        acknowledged: list[float] = []

        def receiver_side(folder: Path) -> float:
            started = time.perf_counter()
            acknowledged.append(_storescu(settings.receiver.port, folder))  # every instance spooled
            while any(receiver.spool.rglob("*.dcm")) or any(receiver.spool.rglob(".*.part")):
                time.sleep(0.02)
            return time.perf_counter() - started

        cstore: dict[str, list[float]] = {"orthanc": [], "receiver": []}
        imports: dict[str, list[float]] = {"storescu": [], "import": []}
        nbytes = {}
        for round_ in range(REPEATS + 1):  # round 0 warms both paths (page cache, imports); not counted
            for side in ("orthanc", "receiver"):
                folder = work / f"cstore-{round_}-{side}"
                nbytes["cstore"] = _write_series(folder, N_CSTORE, template)
                t = _storescu(bare.settings.pacs.dicom_port, folder) if side == "orthanc" else receiver_side(folder)
                assert _count(bare if side == "orthanc" else platform_pacs, folder) == N_CSTORE
                if round_:
                    cstore[side].append(t)
                shutil.rmtree(folder)
            for side in ("storescu", "import"):
                folder = work / f"import-{round_}-{side}"
                nbytes["import"] = _write_series(folder, N_IMPORT, template)
                if side == "storescu":
                    t = _storescu(bare.settings.pacs.dicom_port, folder)
                else:
                    started = time.perf_counter()
                    report = import_files(bare.client(), [folder])
                    t = time.perf_counter() - started
                    assert report.instances_stored == N_IMPORT and not report.skipped
                assert _count(bare, folder) == N_IMPORT
                if round_:
                    imports[side].append(t)
                shutil.rmtree(folder)
        c = {k: median(v) for k, v in cstore.items()}
        i = {k: median(v) for k, v in imports.items()}
        common = {"repeats": REPEATS, "server": "Orthanc 1.10.1 + DICOMweb 1.7 (SQLite index) on loopback",
                  "sender": "dcmtk storescu +sd, one association, calling AE CT01"}
        write_result(
            "cstore_ingest_vs_orthanc", value=round(c["orthanc"] / c["receiver"], 2), goal=">= 0.9",
            unit="x bare Orthanc's C-STORE throughput", command="python benchmarks/bench_intake.py",
            details={**common, "instances": N_CSTORE, "MB": round(nbytes["cstore"] / 1e6, 1),
                     **{f"{k}_median_s": round(v, 3) for k, v in c.items()},
                     **{f"{k}_instances_per_s": round(N_CSTORE / v, 1) for k, v in c.items()},
                     "receiver_acknowledged_median_s": round(median(acknowledged[1:]), 3),
                     "orthanc": "storescu to Orthanc's own DICOM port; ends when storescu ends",
                     "receiver": "storescu to medimg_hub.pacs.receiver (sender check, route to a dataset, fsync'd "
                                 "spool) forwarding over STOW-RS (2 requests in flight) to another Orthanc; ends "
                                 "when the spool is empty",
                     "receiver_acknowledged": "storescu's own run against the receiver (every instance spooled)"})
        write_result(
            "import_vs_storescu", value=round(i["storescu"] / i["import"], 2), goal=">= 1.0",
            unit="x storescu throughput", command="python benchmarks/bench_intake.py",
            details={**common, "files": N_IMPORT, "MB": round(nbytes["import"] / 1e6, 1),
                     **{f"{k}_median_s": round(v, 3) for k, v in i.items()},
                     **{f"{k}_instances_per_s": round(N_IMPORT / v, 1) for k, v in i.items()},
                     "storescu": "storescu +sd FOLDER to Orthanc's DICOM port",
                     "import": "medimg_kernel.importer.import_files(FOLDER) over STOW-RS (64 MB batches), "
                               "headers read first, one QIDO per study"})
        print(f"cstore_ingest_vs_orthanc: {c['orthanc'] / c['receiver']:.2f}x ({c})")
        print(f"import_vs_storescu: {i['storescu'] / i['import']:.2f}x ({i})")
    finally:
        receiver.stop()
        platform_pacs.stop()
        bare.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
