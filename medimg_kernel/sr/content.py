"""The content of a TID 1500 Measurement Report of segment volumes (highdicom objects).

Built by :func:`medimg_kernel.sr.sop.write_sr` and read back by
:func:`medimg_kernel.sr.sop.read_sr_report`: the segment volumes, one TID 1411 volumetric
ROI measurement group per segment (the segment, its finding codes, its volume), the
observation context (person and device observers) and, when reading, the group names and
observers.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .. import __version__
from ..anatomy import find_segment_type
from ..seg import SegInfo, read_seg_types
from ..volume import Volume

__all__ = ["segment_volumes_mm3", "measurement_group", "observation_context", "group_name", "observers"]


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


def measurement_group(
    seg: Dataset, volume: Volume, info: SegInfo, number: int, name: str, value_mm3: float
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 group: the segment, its finding codes (the SEG's own), its finding site, its volume."""
    entry = read_seg_types(seg)[number - 1]
    category, finding = entry.property_category, entry.property_type
    sites = None
    if entry.anatomic_region is not None:
        sites = [hd.sr.FindingSite(anatomic_location=entry.anatomic_region,
                                   laterality=entry.anatomic_region_modifier)]
    algorithm = (
        hd.sr.AlgorithmIdentification(name=info.algorithm.name, version=info.algorithm.version)
        if info.algorithm is not None else None
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=entry.tracking_uid or generate_uid(),
            identifier=f"{name} {entry.tracking_id}" if entry.tracking_id else f"{name} (segment {number})"),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
        ),
        finding_category=category,
        finding_type=finding,
        finding_sites=sites,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Volume, value=value_mm3, unit=codes.UCUM.CubicMillimeter,
                              algorithm_id=algorithm)
        ],
    )


def observation_context(info: SegInfo, person: str | None) -> hd.sr.ObservationContext:
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


def group_name(group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations) -> str:
    """Catalogue name from the group's Finding codes, else its tracking identifier."""
    category, finding = group.finding_category, group.finding_type
    if category is not None and finding is not None:
        entry = find_segment_type(category, finding)
        if entry is not None:
            return entry.name
    return str(group.tracking_identifier or group.tracking_uid)


def observers(content: hd.sr.MeasurementReport) -> tuple[str | None, str | None]:
    """Names of the person and device observers in the report's observation context."""
    person = device = None
    for item in content[0].ContentSequence:
        concept = item.ConceptNameCodeSequence[0]
        if concept.CodeValue == "121008" and concept.CodingSchemeDesignator == "DCM":  # Person Observer Name
            person = str(item.PersonName)
        elif concept.CodeValue == "121013" and concept.CodingSchemeDesignator == "DCM":  # Device Observer Name
            device = str(item.TextValue)
    return person, device
