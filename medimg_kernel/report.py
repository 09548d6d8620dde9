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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from . import __version__
from .anatomy import find_segment_type, get_segment_type
from .errors import MedImgError, ReportError
from .seg import SEG_SOP_CLASS_UIDS, SegInfo, describe_seg, read_seg_masks
from .volume import Volume

logger = logging.getLogger(__name__)

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


def segment_volumes_mm3(labels: np.ndarray, spacing: tuple[float, float, float], n_segments: int) -> list[float]:
    """Volume (mm³) of each segment: voxel count × dz·dy·dx.

    ``labels`` is an integer label map (value ``i + 1`` = segment ``i``) or a
    boolean stack ``(n_segments, z, y, x)``.
    """
    voxel_mm3 = float(np.prod(spacing))
    labels = np.asarray(labels)
    if labels.ndim == 4:
        counts = labels.reshape(labels.shape[0], -1).sum(axis=1)
    else:
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=n_segments + 1)[1:]
    return [int(c) * voxel_mm3 for c in counts]


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
        _measurement_group(seg, volume, info, number, name, value)
        for number, (name, value) in enumerate(zip(info.segment_names, volumes), start=1)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(info, content_creator or info.content_creator),
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
        name = _group_name(group)
        measured = group.get_measurements(name=codes.SCT.Volume)
        if not measured or measured[0].unit.value not in _MM3_PER_UNIT:
            raise ReportError(f"SR {sr.SOPInstanceUID}: segment {name!r} has no Volume measurement in mm3, cm3 or ml")
        volumes[name] = float(measured[0].value) * _MM3_PER_UNIT[measured[0].unit.value]
    person, device = _observers(content)
    return VolumeReport(volumes, seg_uid, series_uid, person, device)


# --- helpers ---------------------------------------------------------------------------------


def _measurement_group(
    seg: Dataset, volume: Volume, info: SegInfo, number: int, name: str, value_mm3: float
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 group: the segment, its finding codes, its volume."""
    try:
        entry = get_segment_type(name)
        category, finding = entry.property_category, entry.property_type
    except MedImgError:  # a segment written by another tool: use its own codes
        item = next(s for s in seg.SegmentSequence if int(s.SegmentNumber) == number)
        category = hd.sr.CodedConcept.from_dataset(item.SegmentedPropertyCategoryCodeSequence[0])
        finding = hd.sr.CodedConcept.from_dataset(item.SegmentedPropertyTypeCodeSequence[0])
    algorithm = (
        hd.sr.AlgorithmIdentification(name=info.algorithm.name, version=info.algorithm.version)
        if info.algorithm is not None else None
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{name} (segment {number})"),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
        ),
        finding_category=category,
        finding_type=finding,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Volume, value=value_mm3, unit=codes.UCUM.CubicMillimeter,
                              algorithm_id=algorithm)
        ],
    )


def _observation_context(info: SegInfo, person: str | None) -> hd.sr.ObservationContext:
    """Person observer (the reviewer) and device observer (the algorithm, or this library)."""
    if info.algorithm is not None:
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["algorithm", info.algorithm.name, info.algorithm.version]),
            name=info.algorithm.name,
            model_name=f"{info.algorithm.name} {info.algorithm.version}"[:64],
        )
    else:
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["medimg_kernel", __version__]),
            name="medimg_kernel",
            model_name=f"medimg_kernel {__version__}",
        )
    person_context = None
    if person:
        person_context = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=person),
        )
    device_context = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    return hd.sr.ObservationContext(observer_person_context=person_context, observer_device_context=device_context)


def _group_name(group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations) -> str:
    """Catalogue name from the group's Finding codes, else its tracking identifier."""
    category, finding = group.finding_category, group.finding_type
    if category is not None and finding is not None:
        entry = find_segment_type(category, finding)
        if entry is not None:
            return entry.name
    return str(group.tracking_identifier or group.tracking_uid)


def _observers(content: hd.sr.MeasurementReport) -> tuple[str | None, str | None]:
    """Names of the person and device observers in the report's observation context."""
    person = device = None
    for item in content[0].ContentSequence:
        concept = item.ConceptNameCodeSequence[0]
        if concept.CodeValue == "121008" and concept.CodingSchemeDesignator == "DCM":  # Person Observer Name
            person = str(item.PersonName)
        elif concept.CodeValue == "121013" and concept.CodingSchemeDesignator == "DCM":  # Device Observer Name
            device = str(item.TextValue)
    return person, device
