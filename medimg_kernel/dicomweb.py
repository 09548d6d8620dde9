"""The DICOMweb client protocol every part of the platform talks through.

Method names are DICOMweb transactions, as in dicomweb-client: ``search_for_*``
(QIDO-RS, returning DICOM JSON dictionaries), ``retrieve_*`` (WADO-RS, returning
lists of :class:`pydicom.dataset.Dataset`), ``iter_*`` (WADO-RS, streaming one
dataset at a time) and ``store_instances`` (STOW-RS).

Two implementations share this protocol: :class:`medimg_kernel.client.DICOMwebHTTPClient`
(a DICOMweb server: the platform gateway or Orthanc) and
:class:`medimg_kernel.client.DICOMfolderClient` (a local folder of DICOM files),
so notebooks, pipelines and tests can swap one for the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from pydicom.dataset import Dataset

#: A DICOM JSON object (PS3.18 F.2) as returned by QIDO-RS: ``{"0020000D": {"vr": "UI", "Value": [...]}}``.
DicomJSON = dict[str, Any]


@runtime_checkable
class DICOMwebProtocol(Protocol):
    """What medimg_kernel needs of a DICOMweb origin server."""

    def search_for_studies(
        self,
        *,
        search_filters: dict[str, Any] | None = None,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[DicomJSON]:
        """QIDO-RS studies; ``search_filters`` are attribute keywords or tags to values."""
        ...

    def search_for_series(
        self,
        study_instance_uid: str | None = None,
        *,
        search_filters: dict[str, Any] | None = None,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[DicomJSON]:
        """QIDO-RS series, of one study or of all studies."""
        ...

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        *,
        search_filters: dict[str, Any] | None = None,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[DicomJSON]:
        """QIDO-RS instances, of one series, one study or all."""
        ...

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        """WADO-RS: every instance of a series, with pixel data as stored."""
        ...

    def iter_series(self, study_instance_uid: str, series_instance_uid: str) -> Iterator[Dataset]:
        """WADO-RS streamed: instances one at a time while the response arrives."""
        ...

    def retrieve_study(self, study_instance_uid: str) -> list[Dataset]:
        """WADO-RS: every instance of a study."""
        ...

    def retrieve_instance(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """WADO-RS: one instance."""
        ...

    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[DicomJSON]:
        """WADO-RS metadata of every instance of a series (no bulk data)."""
        ...

    def store_instances(self, datasets: Sequence[Dataset], study_instance_uid: str | None = None) -> Dataset:
        """STOW-RS; returns the server's response dataset (ReferencedSOPSequence, FailedSOPSequence)."""
        ...
