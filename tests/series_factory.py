"""Small synthetic CT series for tests (no real patient data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume


def small_ct_series(seed: int = 0, shape: tuple[int, int, int] = (6, 16, 20)) -> list[Dataset]:
    """A tiny axial CT series with random HU values; UIDs derived from ``seed``."""
    rng = np.random.default_rng(seed)
    volume = Volume(rng.integers(-1000, 1000, size=shape).astype(np.int16), (2.5, 0.8, 0.9), (-100.0, -120.0, 50.0))
    study_uid = generate_uid(entropy_srcs=["study", str(seed)])
    patient = SyntheticPatient(f"TEST{seed:03d}", f"PHANTOM^TEST{seed:03d}", study_uid, institution_name="TEST SITE")
    return ct_series_from_volume(volume, patient, uid_entropy=["test", seed])


def not_dicom_files(folder: Path) -> tuple[Path, Path, Path]:
    """Three files a DICOM reader must refuse: random bytes, an empty file, a text file."""
    random_file = folder / "random.dcm"
    random_file.write_bytes(np.random.default_rng(5).bytes(4096))
    empty = folder / "empty.dcm"
    empty.touch()
    text = folder / "notes.txt"
    text.write_text("not an image\n" * 50)
    return random_file, empty, text
