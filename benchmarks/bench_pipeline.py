"""Per-study cost of stage 1 of organ-segmentation through the platform vs a bare script.

Both do the same work on the same 20 demo studies: read the CT series from the PACS, run the
registered UNet (default architecture), write a SEG and an SR, STOW them. The bare side runs
in this process with the model loaded once; the platform side goes through the tasks service,
Redis, the dispatcher, a Celery worker, papermill in a warm kernel, the task store and an MLflow
run per job. Both are measured in steady state and warmed the same way: each side first runs the
warm-up study untimed (imports, the model load, torch's first inference). Then ``ROUNDS`` rounds,
each the bare loop then the platform over the same 20 studies (the order alternating from round
to round); a round's ratio is platform seconds per study / bare seconds per study, and
``pipeline_overhead`` is the median over rounds (their spread is in ``details``).

Run: ``python benchmarks/bench_pipeline.py`` (~8 min: services, demo data, a 1-epoch model, 3 × 2 × 20 studies).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import write_result  # noqa: E402

import medimg_kernel as mk  # noqa: E402
from medimg_kernel.phantom.demo import generate_demo  # noqa: E402
from medimg_hub.pacs.ingest import ingest_files  # noqa: E402
from medimg_hub.pacs.orthanc import OrthancServer  # noqa: E402
from medimg_hub.servers.process import free_port  # noqa: E402
from medimg_hub.stack import platform_services  # noqa: E402
from medimg_hub.settings import (  # noqa: E402
    MlflowSettings, PacsSettings, PlatformSettings, QueueSettings, Settings, TasksSettings,
)
from medimg_hub.db.migrations import upgrade  # noqa: E402
from medimg_hub.pipeline.service import RunTarget, TaskService  # noqa: E402
from medimg_kernel.model import segment_volume, select_device  # noqa: E402
from medimg_kernel.registry import ensure_segmentation_model, load_segmentation_model  # noqa: E402
from medimg_kernel.seg import AlgorithmIdentification  # noqa: E402

N_STUDIES = 20
ROUNDS = 3


def bare(client, tracking_uri: str, targets: list[RunTarget]) -> list[float]:
    """The same stage as one plain loop in one process; seconds per study."""
    loaded = load_segmentation_model(tracking_uri)
    device = select_device(None)
    times = []
    for target in targets:
        start = time.perf_counter()
        volume = mk.read_series(client, target.study_instance_uid, target.series_instance_uid)
        labels = segment_volume(loaded.network, volume, loaded.config, device)
        algorithm = AlgorithmIdentification(name=loaded.name, version=str(loaded.version))
        seg = mk.write_seg(volume, labels, list(loaded.config.label_names), type_id="organs", algorithm=algorithm)
        sr = mk.write_sr(seg, volume, labels)
        client.store_instances([seg, sr])
        times.append(time.perf_counter() - start)
    return times


def platform(service: TaskService, targets: list[RunTarget]) -> tuple[float, list]:
    """Submit every study at once; wall time until the last stage 1 finished, and the tasks."""
    start = time.perf_counter()
    tasks = service.submit("organ-segmentation", {}, owner="bench", targets=targets)
    ids = {t.id for t in tasks}
    while True:  # one query per poll, so the harness does not load the store it measures
        done = [t for t in service.list_tasks(owner="bench", limit=1000)
                if t.id in ids and t.jobs[0].status.value in ("succeeded", "failed")]
        if len(done) == len(ids):
            break
        time.sleep(0.1)
    last_finish = max(t.jobs[0].finished_at for t in done)
    first_created = min(t.created_at for t in done)
    return (last_finish - first_created).total_seconds(), done


def breakdown(tasks: list, wall: float) -> dict[str, float]:
    """Where the platform's time per study goes (seconds, medians over jobs)."""
    jobs = [t.jobs[0] for t in tasks]
    cells: dict[str, list[float]] = {"read+load": [], "infer+write+store": [], "record": []}
    for job in jobs:
        nb = nbformat.read(job.outputs["executed_notebook"], 4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        durations = [c.metadata.get("papermill", {}).get("duration") or 0.0 for c in code]
        cells["read+load"].append(durations[-3])
        cells["infer+write+store"].append(durations[-2])
        cells["record"].append(durations[-1])
    job_s = [(j.finished_at - j.started_at).total_seconds() for j in jobs]
    ordered = sorted(jobs, key=lambda j: j.started_at)
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(ordered, ordered[1:])]
    notebook_s = [j.outputs["timing_s"]["notebook"] for j in jobs]
    tracking_s = [j.outputs["timing_s"]["tracking"] for j in jobs]
    return {
        "platform_wall_per_study_s": round(wall / len(jobs), 3),
        "job_running_median_s": round(statistics.median(job_s), 3),
        "papermill_notebook_median_s": round(statistics.median(notebook_s), 3),
        "cells_read_series_and_model_median_s": round(statistics.median(cells["read+load"]), 3),
        "cells_inference_seg_sr_stow_median_s": round(statistics.median(cells["infer+write+store"]), 3),
        "cell_record_outputs_median_s": round(statistics.median(cells["record"]), 3),
        "papermill_overhead_median_s": round(statistics.median(
            n - a - b - c for n, a, b, c in zip(notebook_s, cells["read+load"], cells["infer+write+store"], cells["record"])), 3),
        "mlflow_run_logging_median_s": round(statistics.median(tracking_s), 3),
        "queue_store_and_claim_median_s": round(wall / len(jobs) - statistics.median(job_s), 3),
        "between_jobs_median_s": round(statistics.median(gaps), 3),
    }


def main() -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    settings = Settings(
        platform=PlatformSettings(var_dir=var_dir),
        pacs=PacsSettings(http_port=free_port()),
        mlflow=MlflowSettings(port=free_port(), backend_store_uri=f"sqlite:///{var_dir}/mlflow.db",
                              artifacts_dir=var_dir / "artifacts"),
        queue=QueueSettings(redis_port=free_port(), worker_groups=("segmentation",)),
        tasks=TasksSettings(database_url=f"sqlite:///{var_dir}/platform.db"),
    )
    upgrade(settings.database_url)
    services = platform_services(settings, hub=False)  # no logins needed (the hub would want its own ports)
    try:
        for service in services:
            service.start()
        manifest = generate_demo(var_dir / "demo", n_sites=3, studies_per_site=7, seed=11)
        client = OrthancServer(settings).client()
        ingest_files(client, [var_dir / "demo" / f for s in manifest.studies for f in s.files])
        ensure_segmentation_model(client, settings.mlflow_tracking_uri, epochs=1)
        targets = [RunTarget(s.study_instance_uid, s.series_instance_uid) for s in manifest.studies]
        warm_up, measured = targets[N_STUDIES:], targets[:N_STUDIES]
        tasks_service = TaskService(settings)
        platform(tasks_service, warm_up)  # the worker's kernel imports torch/monai and loads the model once
        bare(client, settings.mlflow_tracking_uri, warm_up)  # the same warm-up for the bare loop
        rounds = []
        for round_ in range(ROUNDS):
            sides = ["bare", "platform"] if round_ % 2 == 0 else ["platform", "bare"]
            for side in sides:
                if side == "bare":
                    bare_times = bare(client, settings.mlflow_tracking_uri, measured)
                else:
                    wall, tasks = platform(tasks_service, measured)
                    failed = [t.jobs[0].error for t in tasks if t.jobs[0].status.value != "succeeded"]
                    if failed:
                        raise SystemExit(f"platform jobs failed: {failed[:3]}")
            bare_per_study = sum(bare_times) / len(bare_times)
            rounds.append({"ratio": round((wall / N_STUDIES) / bare_per_study, 3),
                           "platform_per_study_s": round(wall / N_STUDIES, 3), "bare_per_study_s": round(bare_per_study, 3),
                           "breakdown": breakdown(tasks, wall), "first": sides[0]})
            print(f"round {round_ + 1}: {rounds[-1]['ratio']:.3f} ({sides[0]} first)", flush=True)
        middle = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
        ratio = middle["ratio"]
        details = dict(middle["breakdown"])
        details.update({
            "rounds": [{k: v for k, v in r.items() if k != "breakdown"} for r in rounds],
            "breakdown_of": "the median round",
            "bare_per_study_s": middle["bare_per_study_s"],
            "studies": N_STUDIES,
            "studies_shapes": "3 demo sites: 256x256 x 96 / 50 / 160 slices",
            "model": "default UNet (16,32,64,128), 4 mm grid, CPU",
            "steady_state": "imports, model load and first inference excluded on both sides (each ran the warm-up "
                            "study first)",
        })
        tasks_service.close()
        write_result("pipeline_overhead", value=round(ratio, 3), goal="<= 1.15", unit="x bare script time per study",
                     command="python benchmarks/bench_pipeline.py", details=details)
        print(f"pipeline_overhead: {ratio:.3f}x (median of {[r['ratio'] for r in rounds]})")
        for key, value in details.items():
            print(f"  {key}: {value}")
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
