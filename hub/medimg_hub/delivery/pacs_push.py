"""Pushing finalised SEG and SR objects to a hospital PACS: read from the platform PACS (WADO-RS),
then STOW-RS to a DICOMweb service or C-STORE to a DICOM node.

Both destinations share one verb, ``store_instances(datasets) -> str`` (a line for the audit log),
and raise :class:`~.errors.DestinationRefusedError` when the PACS answers no, and
:class:`~.errors.DestinationUnreachableError` when it does not answer. Instances are sent as stored
(no transcoding) and a push is all or nothing from the outbox's point of view: any refused instance
fails the attempt, and the next attempt sends them all again (a PACS keeps one copy per SOP Instance UID).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from medimg_kernel.client import DICOMwebHTTPClient
from medimg_kernel.dicom_json import first_value
from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import DICOMwebError

from medimg_hub.delivery.errors import DestinationRefusedError, DestinationUnreachableError, SourceUnavailableError
from medimg_hub.delivery.outbox import InstanceRef
from medimg_hub.pacs.connection import PacsConnection
from medimg_hub.settings.destinations import DestinationSettings

log = logging.getLogger(__name__)

#: DIMSE C-STORE statuses that mean stored: success, and the warnings "coercion of data elements",
#: "elements discarded" and "data set does not match SOP class" (PS3.4 Annex B.2.3).
STORED_STATUSES = (0x0000, 0xB000, 0xB006, 0xB007)


class Destination(Protocol):
    """A PACS that takes finalised results."""

    name: str

    def store_instances(self, datasets: Sequence[Dataset]) -> str: ...


def fetch_instances(source: DICOMwebProtocol, study_instance_uid: str, refs: Sequence[InstanceRef]) -> list[Dataset]:
    """The objects ``refs`` name, from the platform PACS (WADO-RS, as stored).

    A reference without its series is looked up first (QIDO-RS by SOPInstanceUID in the study).

    Raises
    ------
    SourceUnavailableError
        The PACS did not answer, or an instance is not there.
    """
    found = []
    for ref in refs:
        try:
            series = ref.series_instance_uid or _series_of(source, study_instance_uid, ref.sop_instance_uid)
            found.append(source.retrieve_instance(study_instance_uid, series, ref.sop_instance_uid))
        except DICOMwebError as exc:
            raise SourceUnavailableError("platform PACS", f"cannot read {ref.role} {ref.sop_instance_uid}: {exc}",
                                         exc.status) from exc
    return found


def _series_of(source: DICOMwebProtocol, study: str, sop: str) -> str:
    items = source.search_for_instances(study, search_filters={"SOPInstanceUID": sop}, fields=["0020000E"])
    series = {first_value(item, "0020000E", None) for item in items} - {None}
    if len(series) != 1:
        raise SourceUnavailableError("platform PACS", f"instance {sop} is not in study {study}")
    return str(series.pop())


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class DICOMwebDestination:
    """STOW-RS to a ``kind = "dicomweb"`` destination.

    Parameters
    ----------
    name
        The ``[[destinations]]`` name.
    connection
        Its URL and credentials (:func:`medimg_hub.pacs.connection.service_connection`).
    timeout_s
        Seconds to connect, and to wait for the answer.
    """

    def __init__(self, name: str, connection: PacsConnection, timeout_s: float) -> None:
        self.name = name
        self.connection = connection
        self._client = DICOMwebHTTPClient(connection.dicomweb_url, session=connection.session(),
                                          timeout=(timeout_s, timeout_s))

    def store_instances(self, datasets: Sequence[Dataset]) -> str:
        try:
            answer = self._client.store_files([_part10(ds) for ds in datasets])
        except DICOMwebError as exc:
            if exc.status is None:
                raise DestinationUnreachableError(self.name, str(exc)) from exc
            raise DestinationRefusedError(self.name, str(exc), exc.status) from exc
        failed = {str(item.ReferencedSOPInstanceUID): item.get("FailureReason", "?")
                  for item in getattr(answer, "FailedSOPSequence", None) or []}
        if failed:
            reasons = ", ".join(f"{sop} (FailureReason {reason})" for sop, reason in failed.items())
            raise DestinationRefusedError(self.name, f"STOW-RS refused {len(failed)} of {len(datasets)}: {reasons}",
                                          409)
        return f"STOW-RS of {len(datasets)} instances to {self.connection.dicomweb_url}"


class DIMSEDestination:
    """C-STORE to a ``kind = "dicom"`` destination (pynetdicom), one association per push."""

    def __init__(self, settings: DestinationSettings) -> None:
        self.name = settings.name
        self.settings = settings

    def _entity(self, datasets: Sequence[Dataset]) -> AE:
        ae = AE(ae_title=self.settings.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.timeout_s
        ae.connection_timeout = self.settings.timeout_s
        offered: dict[str, list[str]] = {}
        for ds in datasets:
            syntaxes = offered.setdefault(str(ds.SOPClassUID), [])
            for syntax in (str(ds.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                if syntax not in syntaxes:
                    syntaxes.append(syntax)
        for sop_class, syntaxes in offered.items():
            ae.add_requested_context(sop_class, syntaxes)
        return ae

    def store_instances(self, datasets: Sequence[Dataset]) -> str:
        s = self.settings
        where = f"{s.called_aet}@{s.host}:{s.port}"
        assoc = self._entity(datasets).associate(s.host, s.port, ae_title=s.called_aet)
        if not assoc.is_established:
            if assoc.is_rejected:
                raise DestinationRefusedError(self.name, f"{where} rejected the association from {s.calling_aet} "
                                              "(check called_aet, calling_aet and the PACS's allowed modalities)")
            raise DestinationUnreachableError(self.name, f"no association with {where} (no answer, or aborted)")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status and "Status" in status else None
                if code not in STORED_STATUSES:
                    shown = f"0x{code:04X}" if code is not None else "none (connection lost)"
                    raise DestinationRefusedError(self.name, f"C-STORE of {ds.SOPInstanceUID} to {where}: status "
                                                  f"{shown}", code)
        finally:
            if assoc.is_established:
                assoc.release()
        return f"C-STORE of {len(datasets)} instances to {where}"


__all__ = ["DICOMwebDestination", "DIMSEDestination", "Destination", "STORED_STATUSES", "fetch_instances"]
