"""The ``[receiver]`` section and the ``[[routes]]`` tables of ``medimg.toml``: studies pushed by
scanners and PACS (DICOM C-STORE), and the rules that put each study in a dataset.

Kept apart from :mod:`medimg_hub.settings.sections` so the receiver's knobs and checks sit together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword

from medimg_kernel.errors import ConfigurationError

_AET = re.compile(r"[\x20-\x7e]{1,16}")


@dataclass(frozen=True)
class ReceiverSettings:
    """The platform's DICOM receiver (``medimg_hub.pacs.receiver``), off by default.

    It accepts associations only from the senders listed, keeps every instance it is sent on
    disk until the PACS has it (a crash loses nothing), routes each study to a dataset
    (``[[routes]]``) and stores it in the PACS over DICOMweb, like any other import.
    """

    #: TCP port of the DICOM (DIMSE) service; 0 = off. Binds ``[platform] bind_host``.
    port: int = 0
    #: The receiver's own (called) AE title; associations calling another title are refused.
    aet: str = "MEDIMG"
    #: Who may send: ``"AETITLE@host"`` (host: an IP address, or ``*`` for any); every other
    #: calling AE title, or a listed title from another host, is refused at association.
    senders: tuple[str, ...] = ()
    #: Dataset of a study that matches no route; "" = none: the study is stored but in no dataset
    #: (visible to admins only: ``medimg datasets unassigned``).
    default_dataset: str = ""
    #: Seconds between looks at the spool for instances to store in the PACS.
    forward_interval_s: float = 0.5
    #: Largest P-DATA PDU senders may send (bytes; 0 = no limit). Larger PDUs mean fewer to decode per
    #: instance; 131072 is the most dcmtk sends and Orthanc accepts (its MaximumPduLength range).
    max_pdu_bytes: int = 131072

    def sender_list(self) -> list[tuple[str, str]]:
        """``senders`` as ``(AE title, host)`` pairs."""
        return [tuple(s.rsplit("@", 1)) for s in self.senders]  # type: ignore[misc]


@dataclass(frozen=True)
class RouteSettings:
    """One routing rule (``[[routes]]``): the first rule whose every given condition holds names
    the dataset. Conditions left empty hold for every study; values may use ``*`` and ``?``."""

    #: The dataset (a ``[[datasets]]`` name).
    dataset: str = ""
    #: Calling AE title of the sender.
    calling_aet: str = ""
    #: InstitutionName (0008,0080) and StationName (0008,1010) of the instance.
    institution: str = ""
    station: str = ""
    #: Further conditions as ``"Keyword=pattern"``, e.g. ``"Modality=CT"``, ``"BodyPartExamined=CHEST"``.
    match: tuple[str, ...] = ()

    def conditions(self) -> list[tuple[str, str]]:
        """Every condition as (DICOM keyword, pattern), the AE title excluded."""
        found = [("InstitutionName", self.institution), ("StationName", self.station)]
        found += [tuple(m.split("=", 1)) for m in self.match]  # type: ignore[misc]
        return [(k, v) for k, v in found if v]


def validate_receiver(receiver: ReceiverSettings, routes: tuple[RouteSettings, ...], dataset_names: list[str]) -> None:
    """Refuse a ``[receiver]`` / ``[[routes]]`` configuration that cannot work, naming the key."""
    if not 0 <= receiver.port <= 65535:
        raise ConfigurationError(f"[receiver] port={receiver.port} is not a valid TCP port")
    if receiver.max_pdu_bytes != 0 and not 4096 <= receiver.max_pdu_bytes <= 2**32 - 1:
        raise ConfigurationError(f"[receiver] max_pdu_bytes={receiver.max_pdu_bytes} must be 0 (no limit) or at "
                                 "least 4096")
    if not _AET.fullmatch(receiver.aet) or receiver.aet != receiver.aet.strip():
        raise ConfigurationError(f"[receiver] aet={receiver.aet!r} must be 1-16 printable characters, no spaces around")
    for sender in receiver.senders:
        aet, sep, host = sender.rpartition("@")
        if not sep or not _AET.fullmatch(aet) or not host:
            raise ConfigurationError(f"[receiver] senders: {sender!r} must be 'AETITLE@host' (host an address or *)")
    if receiver.port and not receiver.senders:
        raise ConfigurationError("[receiver] port is set but senders is empty: list who may send "
                                 "('AETITLE@host'), or set port = 0")
    if receiver.default_dataset and receiver.default_dataset not in dataset_names:
        raise ConfigurationError(f"[receiver] default_dataset={receiver.default_dataset!r} is not a [[datasets]] name; "
                                 f"known: {dataset_names}")
    if receiver.forward_interval_s <= 0:
        raise ConfigurationError("[receiver] forward_interval_s must be positive (seconds)")
    for i, route in enumerate(routes):
        where = f"[[routes]] number {i + 1}"
        if route.dataset not in dataset_names:
            raise ConfigurationError(f"{where}: dataset={route.dataset!r} is not a [[datasets]] name; known: {dataset_names}")
        for condition in route.match:
            key, sep, _ = condition.partition("=")
            if not sep:
                raise ConfigurationError(f"{where}: match {condition!r} must be 'Keyword=pattern'")
            if tag_for_keyword(key) is None:
                raise ConfigurationError(f"{where}: match {condition!r}: {key!r} is not a DICOM attribute keyword "
                                         "(e.g. Modality, BodyPartExamined)")


__all__ = ["ReceiverSettings", "RouteSettings", "validate_receiver"]
