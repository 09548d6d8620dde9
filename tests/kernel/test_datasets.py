"""Training pairs read through a real PACS: newest finalised SEG wins, model SEGs are never labels.

Fixture ``pacs_studies`` (module): two demo studies (one site) in the session's Orthanc:

* study A: its ground truth (``organs``, oldest), a newer reviewed ``organs`` SEG with the
  kidney erased, and a still newer unreviewed ``model_organs`` SEG that calls everything liver;
* study B: only a ``model_organs`` SEG (its ground truth is not ingested).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medimg_kernel.phantom.demo import generate_demo
from medimg_hub.pacs.ingest import ingest_files
from medimg_kernel.client import DICOMfolderClient
from medimg_kernel.datasets import SkippedStudy, holdout_score, load_training_pairs, split_holdout
from medimg_kernel.seg import AlgorithmIdentification, read_seg, write_seg
from medimg_kernel.series import read_series

pytestmark = pytest.mark.integration

NAMES = ["liver", "spleen", "kidney"]
GT_TIME = datetime.now()  # the demo writes its ground truth "now"


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def pacs_studies(orthanc, tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets-demo")
    manifest = generate_demo(root, n_sites=1, studies_per_site=2, seed=4242)
    a, b = manifest.studies
    extra = root / "extra"
    volume_a = read_series(root / a.ct_dir)
    truth_a = read_seg(pydicom.dcmread(root / a.seg_file), volume_a)
    reviewed = np.where(truth_a == 3, 0, truth_a).astype(np.uint8)
    files = [root / f for f in a.files]  # CT + ground truth of A
    files.append(_save(write_seg(volume_a, reviewed, NAMES, type_id="organs", content_creator="REVIEWER^A",
                                 content_datetime=GT_TIME + timedelta(days=30)), extra / "a_reviewed.dcm"))
    everything_liver = (truth_a > 0).astype(np.uint8)
    algorithm = AlgorithmIdentification(name="organ-segmentation", version="1")
    files.append(_save(write_seg(volume_a, everything_liver, NAMES, type_id="organs", algorithm=algorithm,
                                 content_datetime=GT_TIME + timedelta(days=60)), extra / "a_model.dcm"))
    volume_b = read_series(root / b.ct_dir)
    files += [root / b.ct_dir / p.name for p in sorted((root / b.ct_dir).iterdir())]
    files.append(_save(write_seg(volume_b, (volume_b.array > 0).astype(np.uint8), NAMES, type_id="organs",
                                 algorithm=algorithm), extra / "b_model.dcm"))
    ingest_files(orthanc.client(), files)
    return {"a": a, "b": b, "truth_a": truth_a, "reviewed_a": reviewed, "root": root, "files": files}


def test_newest_finalised_seg_is_the_label_and_model_segs_never(orthanc, pacs_studies):
    a, b = pacs_studies["a"], pacs_studies["b"]
    data = load_training_pairs(orthanc.client(), [a.study_instance_uid, b.study_instance_uid])
    assert [p.study_instance_uid for p in data.pairs] == [a.study_instance_uid]
    pair = data.pairs[0]
    assert pair.series_instance_uid == a.series_instance_uid
    assert pair.image.shape == pair.labels.shape == tuple(a.shape)
    np.testing.assert_array_equal(pair.labels, pacs_studies["reviewed_a"])  # not the older ground truth
    assert not np.array_equal(pair.labels, pacs_studies["truth_a"])
    assert pair.seg_series_instance_uid != a.seg_series_instance_uid
    assert set(np.unique(pair.labels)) == {0, 1, 2}  # the model SEG (all liver) was not used
    assert pair.site and pair.label_names == ("liver", "spleen", "kidney")


def test_study_without_finalised_seg_is_skipped_with_a_reason(orthanc, pacs_studies):
    b = pacs_studies["b"]
    data = load_training_pairs(orthanc.client(), [b.study_instance_uid])
    assert data.pairs == ()
    assert data.skipped == (SkippedStudy(b.study_instance_uid, data.skipped[0].reason),)
    assert "finalised" in data.skipped[0].reason and "'organs'" in data.skipped[0].reason


def test_other_type_id_and_remapped_labels(orthanc, pacs_studies):
    a = pacs_studies["a"]
    data = load_training_pairs(orthanc.client(), [a.study_instance_uid], label_names=["spleen", "liver"])
    labels, reviewed = data.pairs[0].labels, pacs_studies["reviewed_a"]
    np.testing.assert_array_equal(labels == 1, reviewed == 2)
    np.testing.assert_array_equal(labels == 2, reviewed == 1)
    other = load_training_pairs(orthanc.client(), [a.study_instance_uid], type_id="lesions")
    assert other.pairs == () and "'lesions'" in other.skipped[0].reason
    with pytest.raises(ValueError, match="model outputs"):
        load_training_pairs(orthanc.client(), type_id="model_organs")


def test_folder_client_gives_the_same_pairs(pacs_studies, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    for k, path in enumerate(pacs_studies["files"]):
        (folder / f"{k:04d}.dcm").write_bytes(path.read_bytes())
    data = load_training_pairs(DICOMfolderClient(folder, readonly=True))
    assert [p.study_instance_uid for p in data.pairs] == [pacs_studies["a"].study_instance_uid]
    np.testing.assert_array_equal(data.pairs[0].labels, pacs_studies["reviewed_a"])
    assert [s.study_instance_uid for s in data.skipped] == [pacs_studies["b"].study_instance_uid]


def test_split_holdout_is_deterministic_stable_and_disjoint():
    uids = [f"1.2.3.{k}" for k in range(40)]
    train, holdout = split_holdout(uids, 0.25, key=str)
    assert holdout and set(split_holdout(list(reversed(uids)), 0.25, key=str)[1]) == set(holdout)
    assert sorted(train + holdout) == sorted(uids) and not set(train) & set(holdout)
    assert set(split_holdout(uids + ["9.9.9"], 0.25, key=str)[1]) - {"9.9.9"} == set(holdout)  # none move
    assert all(holdout_score(u) < 0.25 for u in holdout)
    assert split_holdout(["1.2", "1.3"], 0.01, key=str)[1]  # never an empty holdout from >= 2 studies
    with pytest.raises(ValueError, match="fraction"):
        split_holdout(uids, 1.0, key=str)
