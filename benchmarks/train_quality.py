"""Held-out Dice of the organ segmentation model trained the way the platform's first command trains it.

Generates the demo sites (3 sites × 6 studies, synthetic), ingests them into a real Orthanc on a free
loopback port, reads the training pairs back through DICOMweb (newest finalised SEG per series),
holds out studies by UID hash (:func:`medimg_kernel.datasets.split_holdout`), trains with the
defaults of :func:`medimg_kernel.registry.ensure_segmentation_model` (tracked in a temporary SQLite
MLflow store) and reports Dice per organ on the held-out studies, computed on their original grids.
Result: ``segmentation_dice_liver`` (goal ≥ 0.85); spleen, kidney, studies, epochs, wall time in details.

Run: ``python benchmarks/train_quality.py [--epochs N] [--studies-per-site N]``
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import write_result
from medimg_kernel.phantom.demo import generate_demo
from medimg_hub.pacs.ingest import ingest_files
from medimg_hub.pacs.orthanc import OrthancServer
from medimg_hub.servers.process import free_port
from medimg_hub.settings import PacsSettings, PlatformSettings, Settings
from medimg_kernel.datasets import load_training_pairs, split_holdout
from medimg_kernel.model import SegmentationModelConfig
from medimg_kernel.registry import FIRST_MODEL_EPOCHS, FIRST_MODEL_HOLDOUT
from medimg_kernel.training import train_segmentation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=FIRST_MODEL_EPOCHS)
    parser.add_argument("--studies-per-site", type=int, default=6)
    parser.add_argument("--holdout", type=float, default=FIRST_MODEL_HOLDOUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    for noisy in ("mlflow", "alembic", "urllib3", "dicomweb_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    server = OrthancServer(Settings(platform=PlatformSettings(var_dir=work / "var"),
                                    pacs=PacsSettings(http_port=free_port())))
    server.start()
    try:
        manifest = generate_demo(work / "demo", n_sites=3, studies_per_site=args.studies_per_site)
        client = server.client()
        ingest_files(client, [work / "demo" / f for study in manifest.studies for f in study.files])
        start = time.perf_counter()
        data = load_training_pairs(client, [s.study_instance_uid for s in manifest.studies])
        read_s = time.perf_counter() - start
        train, holdout = split_holdout(list(data.pairs), args.holdout)
        config = SegmentationModelConfig()
        result = train_segmentation(train, holdout, config, tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                                    epochs=args.epochs)
        sites = {s.study_instance_uid: s.site for s in manifest.studies}
        write_result(
            "segmentation_dice_liver", value=round(result.val_dice["liver"], 4), goal=">= 0.85", unit="Dice",
            command="python benchmarks/train_quality.py",
            details={
                "spleen": round(result.val_dice["spleen"], 4), "kidney": round(result.val_dice["kidney"], 4),
                "train_studies": len(train), "heldout_studies": len(holdout),
                "heldout_sites": sorted(sites[p.study_instance_uid] for p in holdout),
                "skipped_studies": len(data.skipped), "epochs": args.epochs,
                "train_wall_time_s": round(result.wall_time_s, 1), "read_pairs_from_pacs_s": round(read_s, 1),
                "config": config.to_json(), "grid": "Dice on each held-out series' original grid",
                "final_train_loss": round(result.history[-1]["loss"], 4),
            },
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
