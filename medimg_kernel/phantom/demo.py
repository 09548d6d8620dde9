"""Generate the demo sites' synthetic abdominal CT studies with ground-truth SEGs.

Each site (:func:`medimg_kernel.phantom.site_profiles`) gets ``studies_per_site``
synthetic patients; every study is one CT series (written with
:func:`medimg_kernel.synthetic.ct_series_from_volume`) and its ground truth as
one DICOM SEG (liver, spleen, kidney; SeriesDescription ``"organs"``,
ContentCreatorName ``GROUND^TRUTH``). Layout under ``out_dir``::

    manifest.json
    SITEA/SITEA001/CT/CT0001.dcm ...   one file per slice, in slice order
    SITEA/SITEA001/SEG/SEG0001.dcm

Generation is deterministic for a seed: the same phantoms and the same CT
UIDs (the SEG's own UIDs come from the SEG writer). ``manifest.json`` is
written last, so an interrupted run is redone. Everything is synthetic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medimg_kernel.errors import ConfigurationError
from medimg_kernel.phantom import SEGMENT_LABELS, SiteProfile, make_phantom, site_profiles
from medimg_kernel.synthetic import SyntheticPatient, ct_series_from_volume
from medimg_kernel.volume import Volume

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
#: Bump when the generator's output changes, so existing demo folders are regenerated.
GENERATOR_VERSION = 1
DEFAULT_SEED = 20261122
UID_NAMESPACE = "medimg-demo"  # first entropy source of every demo UID
SEG_TYPE_ID = "organs"
SEG_CONTENT_CREATOR = "GROUND^TRUTH"
MAX_STUDIES_PER_SITE = 999  # patient ids have three digits
FIRST_STUDY_DATE = dt.date(2026, 1, 5)

#: ``progress(n)``: ``n`` more studies are done (1 per study written; all of them at
#: once when the demo is already up to date), the signature of ``tqdm.update``.
ProgressCallback = Callable[[int], object]


class SegWriter(Protocol):
    """The contract of :func:`medimg_kernel.seg.write_seg` used here.

    Returns the SEG dataset, or ``None`` to write no SEG (test stubs).
    """

    def __call__(self, volume: Volume, labels: np.ndarray, segments: Sequence[str], *,
                 type_id: str, content_creator: str | None = None) -> Dataset | None: ...


@dataclass(frozen=True)
class DemoStudy:
    """One generated study. Paths are relative to the demo folder; geometry in LPS mm."""

    site: str
    index: int
    patient_id: str
    patient_name: str
    seed: int
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    ct_dir: str
    n_instances: int
    seg_file: str | None
    seg_series_instance_uid: str | None
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    label_volumes_ml: dict[str, float]

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the study (CT slices in order, then the SEG), relative to the demo folder."""
        ct = tuple(f"{self.ct_dir}/{_ct_name(k)}" for k in range(self.n_instances))
        return ct + ((self.seg_file,) if self.seg_file else ())


@dataclass(frozen=True)
class DemoManifest:
    """What :func:`generate_demo` wrote; stored as ``out_dir/manifest.json``.

    ``sites`` are the site names (``DemoStudy.site``); ``profiles`` how each acquires.
    """

    seed: int
    n_sites: int
    studies_per_site: int
    generator_version: int
    sites: tuple[str, ...]
    profiles: tuple[SiteProfile, ...]
    studies: tuple[DemoStudy, ...]

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> DemoManifest:
        """Parse :meth:`to_json` output; :class:`ConfigurationError` names what is wrong."""
        try:
            raw = json.loads(text)
            return cls(**{
                **raw,
                "sites": tuple(raw["sites"]),
                "profiles": tuple(SiteProfile(**_tuples(s)) for s in raw["profiles"]),
                "studies": tuple(DemoStudy(**_tuples(s))
                                 for s in raw["studies"]),
            })
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"demo manifest is not valid ({exc}); delete it to regenerate the demo") from exc

    def write(self, out_dir: Path) -> Path:
        """Write ``out_dir/manifest.json`` atomically (temporary file, then rename)."""
        path = Path(out_dir) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_file(cls, path: Path) -> DemoManifest:
        """Read a manifest written by :meth:`write`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the dataclasses hold."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _ct_name(k: int) -> str:
    """File name of CT slice ``k`` (0-based, slice order)."""
    return f"CT{k + 1:04d}.dcm"


def _study_seed(seed: int, site_index: int, index: int) -> int:
    """The phantom seed of one study, derived from the demo seed."""
    return int(np.random.SeedSequence([seed, site_index, index]).generate_state(1)[0])


def _default_seg_writer() -> SegWriter:
    from medimg_kernel.seg import write_seg  # lazy: imports highdicom

    return write_seg  # type: ignore[return-value]


def _write_ct(out_dir: Path, ct_dir: Path, ct: Volume, site: SiteProfile, key: str,
              entropy: list[object], study_seed: int) -> list[Dataset]:
    """Write the CT series of one study; returns its datasets without PixelData."""
    patient = SyntheticPatient(
        patient_id=key, patient_name=f"PHANTOM^{key}",
        study_instance_uid=generate_uid(entropy_srcs=[*map(str, entropy), "study"]),
        accession_number=key, study_date=FIRST_STUDY_DATE + dt.timedelta(days=study_seed % 365),
        institution_name=site.institution_name, manufacturer=site.manufacturer,
    )
    datasets = ct_series_from_volume(ct, patient, uid_entropy=entropy, slice_thickness_mm=site.slice_spacing_mm)
    (out_dir / ct_dir).mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(datasets):
        ds.save_as(out_dir / ct_dir / _ct_name(k), enforce_file_format=True)
        del ds.PixelData  # the SEG writer needs headers only
    return datasets


def _write_study(out_dir: Path, site: SiteProfile, site_index: int, index: int, seed: int,
                 seg_writer: SegWriter) -> DemoStudy:
    """Generate, write and describe study ``index`` (1-based) of one site."""
    study_seed = _study_seed(seed, site_index, index)
    key = f"{site.name}{index:03d}"
    ct, labels = make_phantom(site, study_seed)
    ct_dir = Path(site.name) / key / "CT"
    datasets = _write_ct(out_dir, ct_dir, ct, site, key, [UID_NAMESPACE, seed, site.name, index], study_seed)
    first = datasets[0]
    volume = replace(ct, sources=tuple(datasets), study_instance_uid=first.StudyInstanceUID,
                     series_instance_uid=first.SeriesInstanceUID, frame_of_reference_uid=first.FrameOfReferenceUID)
    seg = seg_writer(volume, labels.array, list(SEGMENT_LABELS), type_id=SEG_TYPE_ID,
                     content_creator=SEG_CONTENT_CREATOR)
    seg_file = None
    if seg is not None:
        seg_file = Path(site.name) / key / "SEG" / "SEG0001.dcm"
        (out_dir / seg_file).parent.mkdir(parents=True, exist_ok=True)
        seg.save_as(out_dir / seg_file, enforce_file_format=True)
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    counts = np.bincount(labels.array.ravel(), minlength=len(SEGMENT_LABELS) + 1)
    return DemoStudy(
        site=site.name, index=index, patient_id=key, patient_name=f"PHANTOM^{key}", seed=study_seed,
        study_instance_uid=first.StudyInstanceUID, series_instance_uid=first.SeriesInstanceUID,
        frame_of_reference_uid=first.FrameOfReferenceUID, ct_dir=ct_dir.as_posix(), n_instances=len(datasets),
        seg_file=seg_file.as_posix() if seg_file else None,
        seg_series_instance_uid=str(seg.SeriesInstanceUID) if seg is not None else None,
        shape=ct.shape, spacing_mm=ct.spacing, origin_mm=tuple(round(o, 4) for o in ct.origin),  # type: ignore[arg-type]
        direction=tuple(tuple(round(float(c), 6) for c in row) for row in ct.direction),  # type: ignore[arg-type]
        label_volumes_ml={name: round(float(counts[i + 1]) * voxel_ml, 1) for i, name in enumerate(SEGMENT_LABELS)},
    )


def _is_complete(manifest: DemoManifest, out_dir: Path, want_segs: bool) -> bool:
    """Whether every file the manifest lists exists (and SEGs, when wanted)."""
    for study in manifest.studies:
        if (study.seg_file is None and want_segs) or not all((out_dir / f).is_file() for f in study.files):
            return False
    return True


def _previous(out_dir: Path) -> DemoManifest | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return DemoManifest.from_file(path)
    except ConfigurationError as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return None


def _remove_studies(out_dir: Path, manifest: DemoManifest) -> None:
    """Delete the study folders an outdated manifest lists (and nothing else)."""
    root = out_dir.resolve()
    for study in manifest.studies:
        folder = (out_dir / study.ct_dir).parent.resolve()
        if folder.is_relative_to(root) and folder != root and folder.is_dir():
            shutil.rmtree(folder)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)


def generate_demo(
    out_dir: Path,
    *,
    n_sites: int = 3,
    studies_per_site: int = 4,
    seed: int = DEFAULT_SEED,
    progress: ProgressCallback | None = None,
    seg_writer: SegWriter | None = None,
) -> DemoManifest:
    """Write the demo studies of ``n_sites`` sites under ``out_dir`` and return the manifest.

    Parameters
    ----------
    out_dir
        Folder to write into (created if missing).
    n_sites
        1–26. The first three are :data:`~medimg_kernel.phantom.DEFAULT_SITES`;
        further sites are derived from them deterministically
        (:func:`~medimg_kernel.phantom.site_profiles`).
    studies_per_site
        1–999 synthetic patients per site.
    seed
        Non-negative integer; fixes every phantom and every CT UID.
    progress
        Called as ``progress(1)`` after each study (``progress(total)`` once if
        the demo is up to date): pass ``tqdm(total=...).update``.
    seg_writer
        Writes the ground-truth SEG (contract of
        :func:`medimg_kernel.seg.write_seg`, the default). A writer
        returning ``None`` writes no SEG.

    Returns
    -------
    DemoManifest
        Also written to ``out_dir/manifest.json``. If that file already
        describes the same seed, counts and generator version and all its
        files exist, nothing is regenerated; otherwise the study folders it
        lists are deleted first.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer; got {seed!r}")
    if not 1 <= studies_per_site <= MAX_STUDIES_PER_SITE:
        raise ConfigurationError(f"studies_per_site must be 1–{MAX_STUDIES_PER_SITE}; got {studies_per_site}")
    sites = site_profiles(n_sites)  # refuses n_sites outside 1–26
    out_dir = Path(out_dir)
    previous = _previous(out_dir)
    wanted = (seed, n_sites, studies_per_site, GENERATOR_VERSION)
    if previous is not None:
        found = (previous.seed, previous.n_sites, previous.studies_per_site, previous.generator_version)
        if found == wanted and _is_complete(previous, out_dir, want_segs=seg_writer is None):
            logger.info("demo in %s is up to date (%d studies)", out_dir, len(previous.studies))
            if progress is not None:
                progress(len(previous.studies))
            return previous
        logger.info("demo in %s is outdated or incomplete; regenerating", out_dir)
        _remove_studies(out_dir, previous)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = seg_writer if seg_writer is not None else _default_seg_writer()
    total, studies = len(sites) * studies_per_site, []
    for site_index, site in enumerate(sites):
        for index in range(1, studies_per_site + 1):
            studies.append(_write_study(out_dir, site, site_index, index, seed, writer))
            logger.debug("wrote demo study %d of %d (site %s)", len(studies), total, site.name)
            if progress is not None:
                progress(1)
    manifest = DemoManifest(seed, n_sites, studies_per_site, GENERATOR_VERSION,
                            tuple(s.name for s in sites), sites, tuple(studies))
    manifest.write(out_dir)
    return manifest


__all__ = ["DemoManifest", "DemoStudy", "SegWriter", "ProgressCallback", "generate_demo", "MANIFEST_NAME"]
