"""One source instance of a series: its header, the attributes read once, where its pixels are.

:class:`Instance` is what :func:`~medimg_kernel.series.read.read_series` collects per file or
dataset before checking and stacking them; :mod:`.geometry` and :mod:`.pixels` read it.
``Instance.attrs`` holds the attributes named in :data:`TEXT_TAGS` (as lists of strings)
and :data:`US_TAGS` (as ints), parsed once per instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["Instance", "TEXT_TAGS", "US_TAGS"]

#: Attributes read once per instance: string-valued (list of strings) and US (int).
TEXT_TAGS = {
    "SOPClassUID": 0x00080016, "Modality": 0x00080060, "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E, "FrameOfReferenceUID": 0x00200052,
    "ImagePositionPatient": 0x00200032, "ImageOrientationPatient": 0x00200037, "PixelSpacing": 0x00280030,
    "SliceThickness": 0x00180050, "SpacingBetweenSlices": 0x00180088, "NumberOfFrames": 0x00280008,
    "PhotometricInterpretation": 0x00280004, "RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052,
}
US_TAGS = {
    "SamplesPerPixel": 0x00280002, "Rows": 0x00280010, "Columns": 0x00280011,
    "BitsAllocated": 0x00280100, "BitsStored": 0x00280101, "PixelRepresentation": 0x00280103,
}


@dataclass
class Instance:
    """One source instance: where it came from, its header and attributes, where its pixels are."""

    label: str  # the file path, or "instance <SOPInstanceUID>" for datasets
    header: Dataset  # without pixel data
    attrs: dict[str, Any]  # TEXT_TAGS as lists of str, US_TAGS as int
    has_pixels: bool
    path: Path | None = None
    dataset: Dataset | None = None  # the caller's dataset, pixels included
    pixel_offset: int | None = None  # file offset of raw little-endian pixels (fast path)

    def text(self, keyword: str) -> str:
        """The first value of ``keyword`` in :attr:`attrs`, or ``""`` when absent.

        Parameters
        ----------
        keyword
            A key of :data:`TEXT_TAGS`.

        Returns
        -------
        str
            The attribute's first value as read from the header.
        """
        values = self.attrs.get(keyword)
        return values[0] if values else ""
