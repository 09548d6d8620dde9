"""Tests of medimg_kernel.phantom.demo: files, UIDs, manifest, idempotency, and (when available) the real SEG."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medimg_kernel.phantom.demo import MANIFEST_NAME, DemoManifest, generate_demo
from medimg_kernel.errors import ConfigurationError
from medimg_kernel.phantom import DEFAULT_SITES, SEGMENT_LABELS, make_phantom
from medimg_kernel.volume import Volume


class StubSegWriter:
    """Records what it was given and writes no SEG."""

    def __init__(self) -> None:
        self.calls: list[tuple[Volume, np.ndarray, list[str], dict]] = []

    def __call__(self, volume: Volume, labels: np.ndarray, segments: Sequence[str], **kwargs: object) -> None:
        self.calls.append((volume, labels, list(segments), kwargs))
        return None


def _generate(out_dir: Path, **kwargs: object) -> tuple[DemoManifest, StubSegWriter]:
    stub = StubSegWriter()
    kwargs = {"n_sites": 1, "studies_per_site": 1, **kwargs}
    return generate_demo(out_dir, seg_writer=stub, **kwargs), stub  # type: ignore[arg-type]


def test_writes_valid_ct_series_and_passes_sources_to_the_seg_writer(
    tmp_path: Path, assert_valid_dicom: Callable[[Dataset | Path], None]
) -> None:
    progress: list[int] = []
    manifest, stub = _generate(tmp_path, n_sites=2, progress=progress.append)
    assert progress == [1, 1]
    assert manifest.sites == ("SITEA", "SITEB") and manifest.profiles == DEFAULT_SITES[:2]
    assert [s.site for s in manifest.studies] == ["SITEA", "SITEB"]
    study = manifest.studies[1]
    files = sorted((tmp_path / study.ct_dir).glob("*.dcm"))
    assert files == [tmp_path / f for f in study.files]
    assert len(files) == study.n_instances == DEFAULT_SITES[1].n_slices
    assert study.seg_file is None and study.shape == (DEFAULT_SITES[1].n_slices, *DEFAULT_SITES[1].matrix)
    ds = pydicom.dcmread(files[0])
    assert ds.InstitutionName == DEFAULT_SITES[1].institution_name
    assert str(ds.PatientName) == "PHANTOM^SITEB001" and ds.PatientID == study.patient_id
    assert ds.StudyInstanceUID == study.study_instance_uid and ds.SeriesInstanceUID == study.series_instance_uid
    assert_valid_dicom(files[0])
    # Pixel data is the phantom, slice 0.
    ct, labels = make_phantom(DEFAULT_SITES[1], study.seed)
    assert np.array_equal(ds.pixel_array.astype(np.int32) - 1024, ct.array[0])
    # The SEG writer got the CT headers in slice order and the label map on the same grid.
    volume, label_map, segments, kwargs = stub.calls[1]
    assert segments == list(SEGMENT_LABELS)
    assert kwargs == {"type_id": "organs", "content_creator": "GROUND^TRUTH"}
    assert np.array_equal(label_map, labels.array) and label_map.dtype == np.uint8
    assert len(volume.sources) == volume.shape[0] and "PixelData" not in volume.sources[0]
    assert [s.InstanceNumber for s in volume.sources] == list(range(1, volume.shape[0] + 1))
    assert volume.series_instance_uid == study.series_instance_uid
    assert study.label_volumes_ml["liver"] > 1000


def test_same_seed_same_uids_and_other_seed_other_uids(tmp_path: Path) -> None:
    first, _ = _generate(tmp_path / "a")
    again, _ = _generate(tmp_path / "b")
    other, _ = _generate(tmp_path / "c", seed=1)
    assert first == again
    a, b = (pydicom.dcmread(p) for p in (tmp_path / "a" / first.studies[0].ct_dir / "CT0010.dcm",
                                         tmp_path / "b" / again.studies[0].ct_dir / "CT0010.dcm"))
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.PixelData == b.PixelData
    assert other.studies[0].study_instance_uid != first.studies[0].study_instance_uid
    assert other.studies[0].seed != first.studies[0].seed


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest, _ = _generate(tmp_path)
    assert DemoManifest.from_json(manifest.to_json()) == manifest
    assert DemoManifest.from_file(tmp_path / MANIFEST_NAME) == manifest
    with pytest.raises(ConfigurationError, match="delete it"):
        DemoManifest.from_json('{"seed": 1}')


def test_is_idempotent_and_regenerates_when_settings_change(tmp_path: Path) -> None:
    manifest, _ = _generate(tmp_path, studies_per_site=2)
    probe = tmp_path / manifest.studies[0].ct_dir / "CT0001.dcm"
    mtime = probe.stat().st_mtime_ns
    progress: list[int] = []
    again, stub = _generate(tmp_path, studies_per_site=2, progress=progress.append)
    assert again == manifest and not stub.calls and probe.stat().st_mtime_ns == mtime
    assert progress == [2]  # a progress bar still reaches its total
    # Fewer studies: regenerated, and the study folder no longer listed is gone.
    smaller, stub = _generate(tmp_path, studies_per_site=1)
    assert len(stub.calls) == 1 and len(smaller.studies) == 1
    assert not (tmp_path / manifest.studies[1].ct_dir).exists()
    # A missing file makes the demo incomplete: regenerated.
    (tmp_path / smaller.studies[0].ct_dir / "CT0003.dcm").unlink()
    _, stub = _generate(tmp_path, studies_per_site=1)
    assert len(stub.calls) == 1 and (tmp_path / smaller.studies[0].ct_dir / "CT0003.dcm").is_file()


@pytest.mark.parametrize("kwargs", [{"n_sites": 0}, {"n_sites": 27}, {"studies_per_site": 0}, {"seed": -5}])
def test_invalid_settings_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        _generate(tmp_path, **kwargs)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_ground_truth_seg_with_the_real_writer(
    tmp_path: Path, assert_valid_dicom: Callable[[Dataset | Path], None]
) -> None:
    # ImportError too: the venv's editable install may find another checkout's half of the SEG code.
    pytest.importorskip("medimg_kernel.seg", exc_type=ImportError)
    manifest = generate_demo(tmp_path, n_sites=1, studies_per_site=1)
    study = manifest.studies[0]
    assert study.seg_file is not None and study.files[-1] == study.seg_file
    seg = pydicom.dcmread(tmp_path / study.seg_file)
    assert seg.Modality == "SEG" and seg.SeriesDescription == "organs"
    assert str(seg.ContentCreatorName) == "GROUND^TRUTH"
    assert [s.SegmentLabel.lower() for s in seg.SegmentSequence] == list(SEGMENT_LABELS)
    assert seg.StudyInstanceUID == study.study_instance_uid
    assert seg.SeriesInstanceUID == study.seg_series_instance_uid
    assert_valid_dicom(tmp_path / study.seg_file)


def test_demo_runs_are_submitted_as_runs_of_their_studies_datasets():
    """Reviewers see a run only through its dataset: every demo run gets its study's dataset."""
    from types import SimpleNamespace

    from medimg_hub.demo.runs import submit_demo_runs

    calls = []

    class Service:
        def list_tasks(self, **_):
            return [SimpleNamespace(study_instance_uid="1.1")]  # already has a run

        def submit(self, pipeline, parameters, *, owner, targets, dataset):
            calls.append((dataset, [t.study_instance_uid for t in targets]))
            return [SimpleNamespace(id=t.study_instance_uid) for t in targets]

    studies = [SimpleNamespace(study_instance_uid=u, series_instance_uid=u + ".9") for u in ("1.1", "1.2", "1.3", "1.4", "1.5")]
    done = submit_demo_runs(Service(), SimpleNamespace(studies=studies),
                            {"1.1": "site-a", "1.2": "site-a", "1.3": "site-b", "1.4": "site-a"})
    assert calls == [("site-a", ["1.2", "1.4"]), ("site-b", ["1.3"])]  # 1.5 is in no dataset: no run
    assert [t.id for t in done] == ["1.2", "1.4", "1.3"]
