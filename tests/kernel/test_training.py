"""Training logs to MLflow and registers a version that loads back to the same outputs.

Fixtures
--------
tiny_pairs (module)
    Three small phantoms as TrainingPairs (no DICOM needed): two to train, one to validate.
trained (module)
    One 2-epoch training of a tiny UNet, tracked in a SQLite MLflow store under tmp.
demo_folder (module)
    Two demo studies (one site) written as files, for the folder client and the notebook.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from medimg_kernel.phantom.demo import generate_demo
from medimg_kernel.client import DICOMfolderClient
from medimg_kernel.datasets import TrainingPair
from medimg_kernel.errors import MedImgError, ModelNotFoundError
from medimg_kernel.model import SegmentationModelConfig, predict_probabilities, preprocess, segment_volume
from medimg_kernel.phantom import DEFAULT_SITES, make_phantom
from medimg_kernel.registry import ensure_segmentation_model, load_segmentation_model
from medimg_kernel.training import train_segmentation, training_set_digest

REPO = Path(__file__).resolve().parents[2]
TINY_OVERRIDES = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "roi_size": [16, 32, 32],
                  "target_spacing_mm": [8.0, 8.0, 8.0], "sw_batch_size": 4}
TINY = SegmentationModelConfig(**TINY_OVERRIDES)
SMALL_SITE = replace(DEFAULT_SITES[1], matrix=(96, 96), n_slices=40)


@pytest.fixture(scope="module")
def tiny_pairs():
    pairs = []
    for seed in (1, 2, 3):
        ct, labels = make_phantom(SMALL_SITE, seed)
        ct = replace(ct, study_instance_uid=f"1.2.826.0.1.3680043.8.498.{seed}")
        pairs.append(TrainingPair(ct, labels.array, TINY.label_names, "1.2.3.4", f"1.2.3.4.{seed}", "SITE B"))
    return pairs


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tiny_pairs, tracking_uri):
    seen = []
    result = train_segmentation(tiny_pairs[:2], tiny_pairs[2:], TINY, tracking_uri=tracking_uri, epochs=2,
                                batch_size=2, progress=seen.append)
    return result, seen


def test_training_logs_metrics_and_registers_a_version(trained, tracking_uri, tiny_pairs):
    result, seen = trained
    assert seen == [1, 1] and len(result.history) == 2
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["epochs"] == "2" and json.loads(run.data.params["roi_size"]) == [16, 32, 32]
    assert [m.step for m in client.get_metric_history(result.run_id, "loss")] == [0, 1]
    assert len(client.get_metric_history(result.run_id, "val_dice_liver")) == 2
    assert set(result.val_dice) == {"liver", "spleen", "kidney"}
    version = client.get_model_version_by_alias("organ-segmentation", "champion")
    assert int(version.version) == result.model_version == 1
    # the training set by fingerprint, never by UID: every engineer reads the registry
    uids = [p.study_instance_uid for p in tiny_pairs[:2]]
    assert version.tags["train_set_sha256"] == training_set_digest(reversed(uids)) != training_set_digest(uids[:1])
    assert not any(uid in value for uid in uids for value in version.tags.values())
    logged = json.loads(Path(client.download_artifacts(result.run_id, "train_set.json")).read_text())
    assert logged == {"n_studies": 2, "sha256": version.tags["train_set_sha256"]}
    assert version.tags["sites"] == "SITE B" and "val_dice_liver" in version.tags
    artifacts = Path(client.get_experiment(run.info.experiment_id).artifact_location.removeprefix("file://"))
    assert artifacts.is_dir() and artifacts.parent == Path(tracking_uri.removeprefix("sqlite:///")).parent


def test_registered_version_loads_back_to_identical_outputs(trained, tracking_uri, tiny_pairs, tmp_path):
    result, _ = trained
    loaded = load_segmentation_model(tracking_uri, alias_or_version="champion", device="cpu", dst_path=tmp_path)
    assert (loaded.name, loaded.version, loaded.run_id) == ("organ-segmentation", 1, result.run_id)
    assert loaded.model_uri == "models:/organ-segmentation/1" and loaded.config == TINY
    volume = tiny_pairs[2].image
    image = preprocess(volume, TINY)
    cpu = torch.device("cpu")
    expected = predict_probabilities(result.network, image, TINY, cpu)
    assert torch.equal(predict_probabilities(loaded.network, image, TINY, cpu), expected)
    np.testing.assert_array_equal(segment_volume(loaded.network, volume, TINY, cpu),
                                  segment_volume(result.network, volume, TINY, cpu))
    assert load_segmentation_model(tracking_uri, alias_or_version=1).version == 1


def test_model_not_found_says_how_to_train_one(tracking_uri, tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ModelNotFoundError) as caught:
        load_segmentation_model(empty)
    message = str(caught.value)
    assert "'organ-segmentation'" in message and "'champion'" in message and "train_segmentation.ipynb" in message
    assert isinstance(caught.value, (MedImgError, LookupError))
    with pytest.raises(ModelNotFoundError, match="'7'"):
        load_segmentation_model(tracking_uri, alias_or_version="7")


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-demo")
    generate_demo(root, n_sites=1, studies_per_site=2, seed=777)
    return root


def test_ensure_trains_only_when_nothing_is_registered(demo_folder, tmp_path, trained, tracking_uri):
    uri = f"sqlite:///{tmp_path / 'first.db'}"
    client = DICOMfolderClient(demo_folder, readonly=True)
    seen = []
    model, was_trained = ensure_segmentation_model(client, uri, config=TINY, epochs=1, progress=seen.append)
    assert was_trained and seen == [1] and model.version == 1
    again, was_trained = ensure_segmentation_model(client, uri, config=TINY, epochs=1, progress=seen.append)
    assert not was_trained and again.version == 1 and seen == [1]


def test_notebook_runs_under_papermill(demo_folder, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "hub"), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "train_segmentation.ipynb"), str(out), kernel_name="python3", progress_bar=False,
        parameters={"dicomweb_url": str(demo_folder), "tracking_uri": f"sqlite:///{tmp_path / 'nb.db'}",
                    "epochs": 1, "config_overrides": TINY_OVERRIDES},
    )
    text = out.read_text()
    assert "liver" in text and "models:/organ-segmentation/1" in text
