"""Benchmark: DICOM SEG writing, medimg_kernel.write_seg (highdicom) vs dcmqi's itkimage2segimage.

Run from the repository root::

    python benchmarks/bench_seg_write.py [--runs 9]

Source series: a synthetic 256×256×200 CT (``ct_series_from_volume``) written
once under ``benchmarks/data/`` (gitignored), and a 3-segment label map
(liver / spleen / both kidneys, non-overlapping ellipsoids).

Both sides get the same inputs, from the same files: the 200 source CT files and the label map
as NRRD (written once with SimpleITK, LPS geometry).

* Ours (the value): in this warm process (as a notebook or a pipeline kernel is), read the 200
  source headers (``medimg_kernel.series.read_headers``: pixel data not read), read the NRRD
  (SimpleITK), ``write_seg`` + ``save_as``.
* dcmqi: the ``itkimage2segimage`` binary (called directly, not through its Python
  console-script wrapper) on the same NRRD, the same source directory and a metadata JSON: its
  process start, reading the 200 files and the NRRD, writing.
* Also reported (``details.ours_in_memory_*``): ours with the source headers and labels already
  in memory (after ``read_series`` and a model), the path a pipeline stage usually takes.

Each round runs the three once, alternating; one warm-up round (OS file cache warm) is
excluded; medians of ``--runs`` rounds.

Both outputs are decoded with ``read_seg`` and must equal the label map
exactly. Writes ``benchmarks/results/seg_write_vs_dcmqi.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import write_result  # noqa: E402
import pydicom

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import highdicom  # noqa: E402

from medimg_kernel.anatomy import get_segment_type  # noqa: E402
from medimg_kernel.seg import AlgorithmIdentification, read_seg, write_seg  # noqa: E402
from medimg_kernel.series import read_headers  # noqa: E402
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume  # noqa: E402
from medimg_kernel.volume import Volume  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "seg_write"
SHAPE = (200, 256, 256)
SPACING = (1.5, 0.78125, 0.78125)
ORIGIN = (-100.0, -100.0, -200.0)
SEGMENTS = ["liver", "spleen", "kidney"]


def make_labels() -> np.ndarray:
    """Liver, spleen and two kidneys (one segment) as non-overlapping ellipsoids, (z, y, x)."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]

    def ellipsoid(c: tuple[int, int, int], r: tuple[int, int, int]) -> np.ndarray:
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1

    labels = np.zeros(SHAPE, np.uint8)
    labels[ellipsoid((110, 110, 80), (55, 55, 60))] = 1
    labels[ellipsoid((120, 120, 200), (30, 28, 25))] = 2
    labels[ellipsoid((70, 190, 70), (25, 20, 15)) | ellipsoid((70, 190, 190), (25, 20, 15))] = 3
    return labels


def source_series() -> list[Path]:
    """The CT files, written once (deterministic UIDs) and reused."""
    ct_dir = DATA / "ct"
    files = sorted(ct_dir.glob("*.dcm"))
    if len(files) == SHAPE[0]:
        return files
    ct_dir.mkdir(parents=True, exist_ok=True)
    hu = np.full(SHAPE, -1000.0, np.float32)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu[np.broadcast_to(((y - 128) / 110) ** 2 + ((x - 128) / 125) ** 2 < 1, SHAPE)] = 40.0
    volume = Volume(hu, SPACING, ORIGIN)
    patient = SyntheticPatient("BENCH-001", "PHANTOM^BENCH", "1.2.826.0.1.3680043.8.498.1", study_description="BENCH")
    for k, ds in enumerate(ct_series_from_volume(volume, patient, uid_entropy=["bench_seg_write"])):
        ds.save_as(ct_dir / f"{k:04d}.dcm", enforce_file_format=True)
    return sorted(ct_dir.glob("*.dcm"))


def load_volume(files: list[Path]) -> Volume:
    """The source headers (no pixel data) read with ``read_headers``, on the series' grid."""
    sources = tuple(read_headers(files))
    first = sources[0]
    return Volume(
        np.zeros(SHAPE, np.int16), SPACING, ORIGIN, sources=sources,
        study_instance_uid=first.StudyInstanceUID, series_instance_uid=first.SeriesInstanceUID,
        frame_of_reference_uid=first.FrameOfReferenceUID, modality="CT",
    )


def write_dcmqi_inputs(labels: np.ndarray, volume: Volume) -> tuple[Path, Path]:
    """The label map as NRRD (LPS geometry) and dcmqi's metadata JSON."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(labels)  # (z, y, x) array → ITK size (x, y, z)
    image.SetSpacing(tuple(reversed(volume.spacing)))
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(np.stack([volume.direction[2], volume.direction[1], volume.direction[0]], axis=1).ravel()))
    nrrd = DATA / "labels.nrrd"
    sitk.WriteImage(image, str(nrrd), useCompression=False)
    attributes = []
    for number, name in enumerate(SEGMENTS, start=1):
        entry = get_segment_type(name)
        attributes.append({
            "labelID": number, "SegmentLabel": name, "SegmentDescription": name,
            "SegmentAlgorithmType": "AUTOMATIC", "SegmentAlgorithmName": "bench-model",
            "SegmentedPropertyCategoryCodeSequence": _code(entry.property_category),
            "SegmentedPropertyTypeCodeSequence": _code(entry.property_type),
            "recommendedDisplayRGBValue": list(entry.rgb),
        })
    metadata = {
        "ContentCreatorName": "BENCH^DCMQI", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "model_abdomen", "SeriesNumber": "300", "InstanceNumber": "1",
        "BodyPartExamined": "ABDOMEN", "ContentLabel": "MODEL_ABDOMEN", "ContentDescription": "benchmark",
        "segmentAttributes": [attributes],
    }
    meta = DATA / "dcmqi_meta.json"
    meta.write_text(json.dumps(metadata, indent=1))
    return nrrd, meta


def _code(code) -> dict[str, str]:
    return {"CodeValue": code.value, "CodingSchemeDesignator": code.scheme_designator, "CodeMeaning": code.meaning}


def timed_runs(volume: Volume, labels: np.ndarray, nrrd: Path, meta: Path, runs: int) -> dict[str, list[float]]:
    """Alternate one run of ours and one of dcmqi, so load changes on the machine hit both alike."""
    import dcmqi

    exe = Path(dcmqi.__file__).parent / "bin" / "itkimage2segimage"
    command = [str(exe), "--inputImageList", str(nrrd), "--inputDICOMDirectory", str(DATA / "ct"),
               "--outputDICOM", str(DATA / "dcmqi.dcm"), "--inputMetadata", str(meta), "--useLabelIDAsSegmentNumber"]
    import SimpleITK as sitk

    algorithm = AlgorithmIdentification("bench-model", "1")
    files = sorted((DATA / "ct").glob("*.dcm"))
    times: dict[str, list[float]] = {"ours": [], "ours_in_memory": [], "dcmqi": []}
    for _ in range(runs + 1):  # the first round is the warm-up
        start = time.perf_counter()
        from_files = load_volume(files)
        read_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(nrrd)))
        seg = write_seg(from_files, read_labels, SEGMENTS, type_id="abdomen", algorithm=algorithm)
        seg.save_as(DATA / "ours.dcm", enforce_file_format=True)
        times["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        seg = write_seg(volume, labels, SEGMENTS, type_id="abdomen", algorithm=algorithm)
        seg.save_as(DATA / "ours-in-memory.dcm", enforce_file_format=True)
        times["ours_in_memory"].append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times["dcmqi"].append(time.perf_counter() - start)
    return {side: values[1:] for side, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    files = source_series()
    volume = load_volume(files)
    labels = make_labels()
    nrrd, meta = write_dcmqi_inputs(labels, volume)
    times = timed_runs(volume, labels, nrrd, meta, args.runs)
    ours, theirs = times["ours"], times["dcmqi"]
    ours_file, dcmqi_file = DATA / "ours.dcm", DATA / "dcmqi.dcm"
    ours_seg, dcmqi_seg = pydicom.dcmread(ours_file), pydicom.dcmread(dcmqi_file)
    ours_read, dcmqi_read = read_seg(ours_seg, volume), read_seg(dcmqi_seg, volume)
    if not (np.array_equal(ours_read, labels) and np.array_equal(dcmqi_read, labels)):
        raise SystemExit("outputs differ from the label map: "
                         f"ours exact={np.array_equal(ours_read, labels)}, dcmqi exact={np.array_equal(dcmqi_read, labels)}")
    counts = {name: int(np.count_nonzero(labels == i + 1)) for i, name in enumerate(SEGMENTS)}
    ours_median, dcmqi_median = statistics.median(ours), statistics.median(theirs)
    in_memory_median = statistics.median(times["ours_in_memory"])
    result = {
        "value": round(ours_median / dcmqi_median, 2),
        "goal": "<= 1.0",
        "unit": "x dcmqi time",
        "command": "python benchmarks/bench_seg_write.py",
        "details": {
            "ours_median_s": round(ours_median, 4),
            "dcmqi_median_s": round(dcmqi_median, 4),
            "ours_runs_s": [round(t, 4) for t in ours],
            "dcmqi_runs_s": [round(t, 4) for t in theirs],
            "ours_in_memory_median_s": round(in_memory_median, 4),
            "ours_in_memory_ratio": round(in_memory_median / dcmqi_median, 2),
            "ours": f"warm process: read {len(files)} source headers (pydicom, no pixel data) + the NRRD "
                    "(SimpleITK) + write_seg (highdicom, BINARY, empty frames omitted) + save_as; 1 warm-up "
                    "round excluded; rounds alternate with dcmqi's",
            "ours_in_memory": "write_seg + save_as with source headers and labels already in memory",
            "dcmqi": f"itkimage2segimage binary via subprocess (process start + reading {len(files)} source files + "
                     "NRRD + writing), 1 warm-up run excluded; that start-up and reading is its real cost",
            "series": {"shape_zyx": list(SHAPE), "spacing_mm": list(SPACING), "segments": SEGMENTS},
            "voxels_per_segment": counts,
            "outputs_equal_label_map": True,
            "frames": {"ours": int(ours_seg.NumberOfFrames), "dcmqi": int(dcmqi_seg.NumberOfFrames)},
            "file_bytes": {"ours": ours_file.stat().st_size, "dcmqi": dcmqi_file.stat().st_size},
            "versions": {"highdicom": highdicom.__version__, "pydicom": pydicom.__version__,
                         "dcmqi": _dcmqi_version(), "python": platform.python_version()},
            "cpus": os.cpu_count(),
        },
    }
    path = write_result("seg_write_vs_dcmqi", value=result["value"], goal=result["goal"], unit=result["unit"],
                        command=result["command"], details=result["details"])
    print(f"{path.name}: {result['value']} {result['unit']} (goal {result['goal']})")


def _dcmqi_version() -> str:
    from importlib.metadata import version

    return version("dcmqi")


if __name__ == "__main__":
    main()
