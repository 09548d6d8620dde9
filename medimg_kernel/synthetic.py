"""Write a Volume as a valid, synthetic CT Image Storage series.

Used by the demo-data generator, tests and benchmarks. Everything written is
synthetic: patient attributes come from the caller (the demo uses made-up
names such as ``"PHANTOM^SITE-A-001"``) and never from real people.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from .errors import ConfigurationError
from .volume import Volume

#: Stored value 0 corresponds to -1024 HU, as on most CT scanners.
CT_RESCALE_INTERCEPT = -1024.0


@dataclass(frozen=True)
class SyntheticPatient:
    """Made-up patient and study attributes for a synthetic study."""

    patient_id: str
    patient_name: str
    study_instance_uid: str
    accession_number: str = ""
    study_date: dt.date = dt.date(2026, 1, 1)
    study_description: str = "SYNTHETIC ABDOMEN CT"
    patient_sex: str = "O"
    patient_birth_date: str = ""
    institution_name: str = ""
    manufacturer: str = "MEDIMG SYNTHETIC"


def _fmt(values: Sequence[float]) -> list[str]:
    """DS strings of at most 16 characters."""
    return [f"{v:.6g}" if abs(v) < 1e6 else f"{v:.8e}"[:16] for v in values]


def ct_series_from_volume(
    volume: Volume,
    patient: SyntheticPatient,
    *,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "CT ABDOMEN",
    slice_thickness_mm: float | None = None,
    uid_entropy: Sequence[object] | None = None,
) -> list[Dataset]:
    """Encode ``volume`` (values in HU) as CT instances, one per z slice.

    Parameters
    ----------
    volume
        Voxels in Hounsfield units indexed ``[z, y, x]`` with LPS geometry
        (see :mod:`medimg_kernel.volume`). Values are rounded and clipped to
        the stored range ``[-1024, 64511]`` HU.
    patient
        Synthetic patient and study attributes.
    series_instance_uid, frame_of_reference_uid
        Generated when not given (deterministically when ``uid_entropy`` is given).
    slice_thickness_mm
        SliceThickness; defaults to the slice spacing.
    uid_entropy
        Values that seed UID generation so the same inputs give the same UIDs.

    Returns
    -------
    list of Dataset
        In slice order, each with file meta information, ready for ``save_as``
        or STOW-RS.
    """
    if volume.array.ndim != 3:
        raise ConfigurationError("volume must be 3-D")
    entropy = [str(e) for e in uid_entropy] if uid_entropy is not None else None

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[*entropy, *map(str, parts)]) if entropy else generate_uid()

    series_uid = series_instance_uid or uid("series", series_number)
    for_uid = frame_of_reference_uid or uid("for")
    stored = np.clip(np.rint(volume.array - CT_RESCALE_INTERCEPT), 0, 65535).astype("<u2")
    dz, dy, dx = volume.spacing
    iop = _fmt([*volume.direction[2], *volume.direction[1]])
    positions = volume.index_to_lps(np.stack([np.arange(volume.shape[0]), np.zeros(volume.shape[0]), np.zeros(volume.shape[0])], axis=1))
    now = dt.datetime(patient.study_date.year, patient.study_date.month, patient.study_date.day, 9, 30)
    datasets = []
    for k in range(volume.shape[0]):
        ds = Dataset()
        sop_uid = uid("sop", series_uid, k)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = patient.accession_number
        ds.Modality = "CT"
        ds.Manufacturer = patient.manufacturer
        ds.InstitutionName = patient.institution_name
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = patient.study_description
        ds.SeriesDescription = series_description
        ds.PatientName = patient.patient_name
        ds.PatientID = patient.patient_id
        ds.PatientBirthDate = patient.patient_birth_date
        ds.PatientSex = patient.patient_sex
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "SYNTHETIC PHANTOM - NO REAL PATIENT"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = _fmt([slice_thickness_mm or dz])[0]
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = patient.study_instance_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _fmt(positions[k])
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.PixelSpacing = _fmt([dy, dx])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = _fmt([CT_RESCALE_INTERCEPT])[0]
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        datasets.append(ds)
    return datasets
