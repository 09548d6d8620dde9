"""Benchmark: read_series vs SimpleITK's ImageSeriesReader on a 200 × 512 × 512 CT series.

Run from the repository root::

    python benchmarks/bench_read_series.py [--repeats N]

Generates (once) an uncompressed synthetic CT series under ``benchmarks/data/`` (gitignored),
warms the page cache, then times both readers in one process, interleaved, and writes
``benchmarks/results/read_series_vs_sitk.json``. Both timings cover the whole operation
"directory → volume": ours is ``read_series(directory)``; SimpleITK's is
``GetGDCMSeriesFileNames(directory)`` (GDCM's sorted file names) plus ``Execute()``.
The SimpleITK ``Execute()``-only time (file names given) is reported as well. The voxel
values of both results are checked for equality before anything is written.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import SimpleITK as sitk  # noqa: E402

from medimg_kernel.series import read_series  # noqa: E402
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume  # noqa: E402
from medimg_kernel.volume import Volume  # noqa: E402

SHAPE = (200, 512, 512)
DATA = ROOT / "benchmarks" / "data" / "ct_200x512x512"


def phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """A body-like ellipsoid with organs and noise, in HU (int16)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    rng = np.random.default_rng(20260101)
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 240.0) ** 2 <= 1.0
    organ = ((z - 100) / 60.0) ** 2 + ((y - 230) / 70.0) ** 2 + ((x - 180) / 90.0) ** 2 <= 1.0
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[np.broadcast_to(body, shape)] = 40
    hu[organ] = 60
    hu += rng.integers(-20, 21, size=shape, dtype=np.int16)
    return hu


def ensure_data() -> list[Path]:
    marker = DATA / ".complete"
    if not marker.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        axial = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # z = S, y = P, x = L
        volume = Volume(phantom(SHAPE), (1.25, 0.75, 0.75), (-192.0, -180.0, -350.0), axial)
        patient = SyntheticPatient("BENCH-001", "PHANTOM^BENCH", "1.2.826.0.1.3680043.8.498.1")
        for k, ds in enumerate(ct_series_from_volume(volume, patient, uid_entropy=["bench"])):
            ds.save_as(DATA / f"slice{k:04d}.dcm", enforce_file_format=True)
        marker.touch()
    return sorted(DATA.glob("*.dcm"))


def warm(files: list[Path]) -> int:
    return sum(len(f.read_bytes()) for f in files)


def ours() -> np.ndarray:
    return read_series(DATA).array


def sitk_full() -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(DATA)))
    return sitk.GetArrayViewFromImage(reader.Execute())


def sitk_execute(names: tuple[str, ...]) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return sitk.GetArrayViewFromImage(reader.Execute())


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    files = ensure_data()
    nbytes = warm(files)
    names = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(DATA)))

    volume = read_series(DATA)
    image = sitk.ImageSeriesReader()
    image.SetFileNames(names)
    reference = image.Execute()
    sitk_array = sitk.GetArrayFromImage(reference)
    equal = bool(np.array_equal(volume.array, sitk_array))
    geometry_equal = bool(
        np.allclose(volume.spacing[::-1], reference.GetSpacing())
        and np.allclose(volume.origin, reference.GetOrigin(), atol=1e-3)
        and np.allclose(volume.direction[::-1].T.ravel(), reference.GetDirection(), atol=1e-6)
    )
    if not equal or not geometry_equal:
        raise SystemExit(f"results differ: voxels equal {equal}, geometry equal {geometry_equal}")

    times: dict[str, list[float]] = {"read_series": [], "sitk_full": [], "sitk_execute_only": []}
    for _ in range(args.repeats):  # interleaved
        times["read_series"].append(timed(ours))
        times["sitk_full"].append(timed(sitk_full))
        times["sitk_execute_only"].append(timed(sitk_execute, names))
    median = {key: statistics.median(values) for key, values in times.items()}
    result = {
        "value": round(median["sitk_full"] / median["read_series"], 2),
        "goal": ">= 1.5",
        "unit": "x speed of SimpleITK",
        "command": "python benchmarks/bench_read_series.py",
        "details": {
            "series": f"{len(files)} files, {SHAPE[1]}x{SHAPE[2]}, uncompressed explicit VR little endian, "
                      f"{nbytes / 1e6:.0f} MB, page cache warm",
            "repeats": args.repeats,
            "median_s": {key: round(value, 4) for key, value in median.items()},
            "all_s": {key: [round(v, 4) for v in values] for key, values in times.items()},
            "ratio_vs_sitk_execute_only": round(median["sitk_execute_only"] / median["read_series"], 2),
            "voxels_equal": equal,
            "geometry_equal": geometry_equal,
            "our_dtype": str(volume.array.dtype),
            "sitk_pixel_type": reference.GetPixelIDTypeAsString(),
            "python": platform.python_version(),
            "simpleitk": sitk.Version_VersionString(),
            "cpus": __import__("os").cpu_count(),
        },
    }
    path = write_result("read_series_vs_sitk", value=result["value"], goal=result["goal"], unit=result["unit"],
                        command=result["command"], details=result["details"])
    print(f"{path.name}: {result['value']} {result['unit']} (goal {result['goal']})")


if __name__ == "__main__":
    main()
