"""medimg_kernel: the library every platform kernel imports.

Everyday names are importable from the top level; heavy modules (highdicom,
torch) load only when first used.

Rooms: :mod:`.series` (reading image series), :mod:`.seg` (DICOM SEG), :mod:`.rtstruct`
(RT Structure Sets), :mod:`.sr` (measurement reports), :mod:`.pipeline` (pipeline
descriptors), :mod:`.review` (the clinician's review widgets), :mod:`.federation` (a
federated site's work), :mod:`.phantom` (synthetic patients), and single modules for the
DICOMweb protocol, clients and DICOM JSON values, NIfTI, datasets, models, training and
the registry.

medimg_kernel imports only itself and third-party libraries; never :mod:`medimg_hub`
(the hub imports the kernel, not the reverse).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import (
    AccessDeniedError,
    ConfigurationError,
    DicomFileError,
    DICOMwebError,
    MedImgError,
    MixedSeriesError,
    NotAnImageError,
    NotFoundError,
    PixelDataError,
    ReportError,
    RTStructError,
    SegmentationError,
    SeriesError,
    SeriesGeometryError,
    UnsupportedImageError,
)
from .volume import Volume

__version__ = "0.1.0"

_LAZY = {
    "connect": "client",
    "DICOMwebHTTPClient": "client",
    "DICOMfolderClient": "client",
    "DICOMwebProtocol": "dicomweb",
    "read_series": "series",
    "write_seg": "seg",
    "read_seg": "seg",
    "read_seg_types": "seg",
    "SegmentType": "anatomy",
    "get_segment_type": "anatomy",
    "register_segment_type": "anatomy",
    "read_nifti": "nifti",
    "write_nifti": "nifti",
    "read_rtstruct": "rtstruct",
    "write_rtstruct": "rtstruct",
    "write_sr": "sr",
    "read_sr": "sr",
    "find_studies": "cohort",
}

__all__ = [
    "AccessDeniedError", "ConfigurationError", "DicomFileError", "DICOMwebError", "MedImgError",
    "MixedSeriesError", "NotAnImageError", "NotFoundError", "PixelDataError", "ReportError", "RTStructError",
    "SegmentationError", "SeriesError", "SeriesGeometryError", "UnsupportedImageError", "Volume", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medimg_kernel' has no attribute {name!r}")
