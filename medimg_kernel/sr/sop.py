"""TID 1500 Measurement Reports of segment volumes, written and read with highdicom.

Each SEG written by :func:`medimg_kernel.seg.write_seg` comes with one
Comprehensive 3D SR (DESIGN.md §4) holding a TID 1500 "Imaging Measurement
Report": one TID 1411 volumetric ROI measurement group per segment, with

* the segment referenced through TID 1411 "Referenced Segment" (SEG SOP
  Instance UID + SegmentNumber) and its "Source series for segmentation",
* Finding Category / Finding (the catalogue's property category and type),
* one measurement: SCT 118565006 "Volume" in UCUM ``mm3``, computed as the
  voxel count × dz·dy·dx,
* the algorithm (TID 4019) for model SEGs.

The observation context names the reviewer (person observer) when there is
one and the algorithm (device observer) for model SEGs. The SR is in the
SEG's study, its SeriesDescription is the SEG's, and its evidence lists the SEG
and the source CT instances (CurrentRequestedProcedureEvidenceSequence).

The document is written and read here; its content items are built and read in
:mod:`medimg_kernel.sr.content`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..errors import MedImgError, ReportError
from ..seg import SEG_SOP_CLASS_UIDS, describe_seg, read_seg_masks
from ..volume import Volume
from .content import group_name, measurement_group, observation_context, observers, segment_volumes_mm3

logger = logging.getLogger(__name__)

__all__ = ["VolumeReport", "write_sr", "read_sr", "read_sr_report"]

_MM3_PER_UNIT = {"mm3": 1.0, "cm3": 1000.0, "ml": 1000.0, "mL": 1000.0}


@dataclass(frozen=True)
class VolumeReport:
    """What :func:`read_sr_report` reads from a measurement report.

    Attributes
    ----------
    volumes_mm3
        Segment name → volume in mm³, in SegmentNumber order.
    segmentation_sop_instance_uid
        The SEG whose segments are measured.
    source_series_instance_uid
        The image series the SEG segments.
    observer_person, observer_device
        Person observer name and device observer name, or ``None``.
    """

    volumes_mm3: dict[str, float]
    segmentation_sop_instance_uid: str
    source_series_instance_uid: str
    observer_person: str | None
    observer_device: str | None


def write_sr(
    seg: Dataset,
    volume: Volume,
    labels: np.ndarray | None = None,
    *,
    series_number: int = 301,
    content_creator: str | None = None,
) -> Dataset:
    """A TID 1500 Measurement Report with the volume of every segment of ``seg``.

    Parameters
    ----------
    seg
        The SEG measured (as written by ``write_seg``).
    volume
        The segmented series (its spacing gives the voxel volume, its
        ``sources`` the evidence and the source series).
    labels
        The label map or boolean mask stack the SEG was written from; decoded
        from ``seg`` with :func:`~medimg_kernel.seg.read_seg_masks`
        when ``None``.
    series_number
        SeriesNumber of the SR series.
    content_creator
        Person observer (``"FAMILY^GIVEN"``); defaults to the SEG's ContentCreatorName.

    Returns
    -------
    pydicom.dataset.Dataset
        A highdicom ``Comprehensive3DSR``.

    Raises
    ------
    ReportError
        ``seg`` is not a SEG, does not fit ``volume``, or ``labels`` do not fit.
    """
    if seg.get("SOPClassUID") not in SEG_SOP_CLASS_UIDS:
        raise ReportError(f"write_sr needs a SEG instance; got SOP class {seg.get('SOPClassUID')}")
    if not volume.sources or not volume.series_instance_uid:
        raise ReportError("volume has no sources or SeriesInstanceUID: the SR must reference the source series")
    try:
        info = describe_seg(seg)
        if labels is None:
            labels, _ = read_seg_masks(seg, volume)
    except MedImgError as exc:
        raise ReportError(f"cannot measure SEG {seg.get('SOPInstanceUID')}: {exc}") from exc
    n = len(info.segment_names)
    labels = np.asarray(labels)
    if labels.shape not in (volume.shape, (n, *volume.shape)) or (labels.ndim == 3 and labels.max(initial=0) > n):
        raise ReportError(
            f"labels of shape {labels.shape} do not fit the SEG's {n} segments on a volume of shape {volume.shape}"
        )
    volumes = segment_volumes_mm3(labels, volume.spacing, n)
    groups = [
        measurement_group(seg, volume, info, number, name, value)
        for number, (name, value) in enumerate(zip(info.segment_names, volumes), start=1)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(info, content_creator or info.content_creator),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion if volume.modality in ("CT", "") else codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *volume.sources],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medimg-platform",
        is_complete=True,
        series_description=str(seg.get("SeriesDescription", "")) or None,
    )
    logger.debug("SR %s: %d measurement groups for SEG %s", sr.SOPInstanceUID, len(groups), seg.SOPInstanceUID)
    return sr


def read_sr(sr: Dataset) -> dict[str, float]:
    """Segment name → volume in mm³ from a measurement report written by :func:`write_sr`.

    Raises
    ------
    ReportError
        Not a TID 1500 report, or a group without a volume measurement.
    """
    return read_sr_report(sr).volumes_mm3


def read_sr_report(sr: Dataset) -> VolumeReport:
    """Volumes and references of a measurement report (see :class:`VolumeReport`)."""
    try:
        document = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=False)
        content = document.content
        groups = content.get_volumetric_roi_measurement_groups()
    except (AttributeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ReportError(f"SR {sr.get('SOPInstanceUID')} is not a readable TID 1500 measurement report: {exc}") from exc
    volumes: dict[str, float] = {}
    seg_uid, series_uid = "", ""
    for group in groups:
        segment = group.referenced_segment
        if segment is None:
            raise ReportError(f"SR {sr.SOPInstanceUID}: a measurement group references no segment")
        seg_uid = segment.referenced_sop_instance_uid
        source_series = segment.source_series_for_segmentation
        series_uid = source_series.value if source_series is not None else series_uid
        name = group_name(group)
        measured = group.get_measurements(name=codes.SCT.Volume)
        if not measured or measured[0].unit.value not in _MM3_PER_UNIT:
            raise ReportError(f"SR {sr.SOPInstanceUID}: segment {name!r} has no Volume measurement in mm3, cm3 or ml")
        volumes[name] = float(measured[0].value) * _MM3_PER_UNIT[measured[0].unit.value]
    person, device = observers(content)
    return VolumeReport(volumes, seg_uid, series_uid, person, device)
