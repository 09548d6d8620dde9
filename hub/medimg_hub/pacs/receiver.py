"""The platform's DICOM receiver: scanners and PACS push studies (C-STORE); each lands in its dataset.

A pynetdicom storage SCP on ``[receiver] port`` (``medimg receiver``; ``medimg up`` starts it when
the port is set):

* **Who may send.** An association is accepted only from a calling AE title listed in ``[receiver]
  senders`` *and* from that sender's host, calling the receiver's own AE title; anything else is
  rejected at association (A-ASSOCIATE-RJ, "calling AE title not recognised"), and audited.
* **Where it goes.** Each instance is routed by ``[[routes]]`` (:mod:`medimg_hub.pacs.routing`):
  first rule that holds, else ``default_dataset``, else no dataset (stored, *unassigned*: visible to
  admins with ``medimg datasets unassigned``, never silently lost). A dataset with ``images_only``
  refuses non-image objects (status 0x0122, the SOP class named in the comment).
* **Nothing lost.** An instance is acknowledged once its bytes (as received, with their transfer
  syntax) are in the spool (``var/receiver/spool/<dataset>/<study>/<sop>.dcm``, written to a
  temporary name, synced, renamed). A forwarder thread stores spooled studies in the PACS over
  DICOMweb (STOW-RS, the same path as every other import, so an external DICOMweb PACS works the
  same), puts each study in its dataset first, and deletes the files only after the PACS answered;
  a PACS that is down is retried, a process killed mid-way resends on restart (the PACS ignores
  an instance it already holds). An instance the PACS refuses moves to ``var/receiver/refused/``
  with the reason.
* **Audited.** One audit row per refused association, per refused instance, and per study stored
  (sender, dataset, instance count); no patient attributes.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import (AE, ALL_TRANSFER_SYNTAXES, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION,
                        AllStoragePresentationContexts, evt)
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy.orm import sessionmaker

from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import DICOMwebError

from medimg_hub.access.audit import AuditLog, AuditRecord
from medimg_hub.access.datasets import assign_study
from medimg_hub.access.models import Outcome
from medimg_hub.db import make_engine
from medimg_hub.pacs.routing import is_image, route
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

#: Spool folder name of instances routed to no dataset.
UNASSIGNED = "_unassigned"
#: Upper size of one STOW-RS request to the PACS (bytes of files), and requests in flight at once.
FORWARD_BATCH_BYTES = 16 * 1024 * 1024
STOW_STREAMS = 2
#: C-STORE status: Refused, SOP class not supported (PS3.4 Table GG.4-1); Processing failure.
REFUSED_SOP_CLASS = 0x0122
PROCESSING_FAILURE = 0x0110


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str) -> bytes:
    """The DICOM file format's preamble, prefix and File Meta Information group (PS3.10 §7.1) of a
    received instance: prepended to the data set's bytes as received, they make its spool file.

    Written here byte by byte (explicit VR little endian) rather than with pydicom's
    ``write_file_meta_info`` (what pynetdicom's ``Event.encoded_dataset`` uses): that path builds
    and deep-copies a ``FileMetaDataset`` per instance and was a third of the receiver's time per
    C-STORE. The elements are those pynetdicom writes; tests read the result back with pydicom.
    """
    def element(element: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b" " if vr in (b"SH", b"AE") else b"\x00"
        if vr == b"OB":
            return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value

    body = b"".join((
        element(0x0001, b"OB", b"\x00\x01"),
        element(0x0002, b"UI", sop_class_uid.encode("ascii")),
        element(0x0003, b"UI", sop_instance_uid.encode("ascii")),
        element(0x0010, b"UI", transfer_syntax_uid.encode("ascii")),
        element(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode("ascii")),
        element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")),
        *((element(0x0016, b"AE", source_aet.strip().encode("ascii", "replace")),) if source_aet.strip() else ()),
    ))
    return b"\x00" * 128 + b"DICM" + element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _routing_header(event: Any) -> Dataset:
    """The received data set up to its pixel data (what routing reads), without decoding the rest;
    a deflated transfer syntax takes pynetdicom's full decode."""
    syntax = event.context.transfer_syntax
    if syntax.is_deflated:
        return event.dataset
    raw = event.request.DataSet
    raw.seek(0)
    return read_dataset(raw, syntax.is_implicit_VR, syntax.is_little_endian,
                        stop_when=lambda tag, vr, length: tag >= 0x7FE00008)  # any pixel data


class _SenderCheckingAE(AE):  # type: ignore[misc]
    """An AE whose accepted calling AE titles depend on the peer's host.

    pynetdicom checks ``require_calling_aet`` while it negotiates, in the association's own thread
    (an ``Association`` is a ``Thread``): the titles allowed from that association's host are
    returned, so a listed title from another host is rejected at association like an unknown one.
    """

    senders: list[tuple[str, str]] = []

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        assoc = threading.current_thread()
        host = getattr(getattr(assoc, "requestor", None), "address", None)
        allowed = [aet for aet, where in self.senders if where in ("*", host)]
        return allowed or ["\u0000none"]  # an empty list would mean "any"

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:
        pass


@dataclass
class Receiver:
    """The receiver of one platform (its settings); :meth:`start` serves, :meth:`stop` ends.

    Parameters
    ----------
    settings
        ``[receiver]``, ``[[routes]]``, ``[[datasets]]`` (``images_only``), ``[platform] bind_host``.
    pacs
        Where studies are stored (hub side: the platform PACS's client).
    """

    settings: Settings
    pacs: DICOMwebProtocol
    _server: Any = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _forwarder: threading.Thread | None = field(default=None, init=False)
    _received: dict[int, Counter[tuple[str, str]]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.root = self.settings.var_dir / "receiver"
        self.spool = self.root / "spool"
        self.refused = self.root / "refused"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.settings.database_url)
        self.sessions = sessionmaker(self.engine)
        self.audit = AuditLog(self.engine)
        self.images_only = {d.name for d in self.settings.datasets if d.images_only}

    # --- the DICOM service --------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``[platform] bind_host``:``[receiver] port`` and start the forwarder."""
        cfg = self.settings.receiver
        ae = _SenderCheckingAE(ae_title=cfg.aet)
        ae.senders = cfg.sender_list()
        ae.require_called_aet = True
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_associations = 16
        # senders may send P-DATA PDUs this large: fewer PDUs to decode per instance in Python
        ae.maximum_pdu_size = cfg.max_pdu_bytes
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            # pynetdicom's own handlers log every PDU and DIMSE message at DEBUG (formatting each)
            pynetdicom._config.LOG_HANDLER_LEVEL = "none"
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: 0x0000),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_RELEASED, self._on_ended),
                    (evt.EVT_ABORTED, self._on_ended)]
        self._server = ae.start_server((self.settings.platform.bind_host, cfg.port), block=False,
                                       evt_handlers=handlers)
        # accepted sockets inherit it (Linux): a C-STORE response never waits for a delayed ACK
        self._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._forwarder = threading.Thread(target=self._forward_loop, name="receiver-forwarder", daemon=True)
        self._forwarder.start()
        log.info("DICOM receiver listening on %s:%d as %s (%d senders)", self.settings.platform.bind_host, cfg.port,
                 cfg.aet, len(cfg.senders))

    def stop(self) -> None:
        """Stop listening, then store what is spooled (one last pass)."""
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        if self._forwarder is not None:
            self._forwarder.join(timeout=60)
        self.forward_once()
        self.engine.dispose()

    def _sender(self, event: Any) -> str:
        return f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"

    def _on_store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title.strip()
        ds = _routing_header(event)
        study, sop = str(ds.get("StudyInstanceUID", "")), str(event.request.AffectedSOPInstanceUID)
        sop_class = str(event.request.AffectedSOPClassUID)
        dataset = route(self.settings.routes, calling, ds, self.settings.receiver.default_dataset)
        if not study or not sop:
            self._audit(event, Outcome.DENIED, PROCESSING_FAILURE, None, None, "instance without Study/SOP Instance UID")
            return PROCESSING_FAILURE
        if dataset in self.images_only and not is_image(sop_class):
            detail = f"{UID(sop_class).name} refused: dataset {dataset} takes images only"
            self._audit(event, Outcome.DENIED, REFUSED_SOP_CLASS, study, dataset, detail)
            status = pydicom.Dataset()
            status.Status, status.ErrorComment = REFUSED_SOP_CLASS, f"images only: {UID(sop_class).name}"[:64]
            return status  # type: ignore[return-value]
        folder = self.spool / (dataset or UNASSIGNED) / study
        temporary = folder / f".{sop}.{uuid.uuid4().hex}.part"
        data = part10_header(sop_class, sop, str(event.context.transfer_syntax), calling) + \
            event.request.DataSet.getbuffer()
        for attempt in range(3):  # the forwarder removes a study folder it emptied: make it again
            folder.mkdir(parents=True, exist_ok=True)
            try:
                with open(temporary, "wb") as fh:  # a non-empty folder cannot be removed from here on
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        os.replace(temporary, folder / f"{sop}.dcm")
        with self._lock:
            self._received.setdefault(id(event.assoc), Counter())[(study, dataset or "")] += 1
        return 0x0000

    def _on_rejected(self, event: Any) -> None:
        self._audit(event, Outcome.DENIED, 0, None, None,
                    f"association from {self._sender(event)} refused: not a listed sender")

    def _on_ended(self, event: Any) -> None:
        with self._lock:
            received = self._received.pop(id(event.assoc), Counter())
        for (study, dataset), count in received.items():
            self._audit(event, Outcome.ALLOWED, 0, study, dataset or None,
                        f"{count} instances received from {self._sender(event)}; "
                        + (f"routed to {dataset}" if dataset else "routed to no dataset (unassigned)"))

    def _audit(self, event: Any, outcome: Outcome, status: int, study: str | None, dataset: str | None,
               detail: str) -> None:
        self.audit.append(AuditRecord(user=f"dicom:{event.assoc.requestor.ae_title.strip()}", groups=(),
                                      action="dicom-c-store", outcome=outcome, status=status,
                                      request_id=uuid.uuid4().hex, study_instance_uid=study, dataset=dataset,
                                      detail=detail))

    # --- the forwarder: spool → PACS ----------------------------------------------------------

    def _forward_loop(self) -> None:
        wait = self.settings.receiver.forward_interval_s
        while not self._stop.wait(wait):
            try:
                self.forward_once()
                wait = self.settings.receiver.forward_interval_s
            except DICOMwebError as exc:  # the PACS is down: keep everything, try again later
                wait = min(30.0, wait * 2)
                log.warning("the PACS did not take spooled instances (%s); retrying in %.1f s", exc, wait)
            except Exception:  # noqa: BLE001 - a database or disk error must not stop forwarding for good
                wait = min(30.0, wait * 2)
                log.exception("forwarding spooled instances failed; retrying in %.1f s", wait)

    def forward_once(self) -> int:
        """Store every spooled study in the PACS; the number of instances stored.

        Raises
        ------
        DICOMwebError
            The PACS could not be reached or failed; the files stay spooled.
        """
        stored = 0
        for dataset_dir in sorted(p for p in self.spool.iterdir() if p.is_dir()):
            dataset = None if dataset_dir.name == UNASSIGNED else dataset_dir.name
            for study_dir in sorted(p for p in dataset_dir.iterdir() if p.is_dir()):
                files = sorted(study_dir.glob("*.dcm"))
                if files:
                    stored += self._forward_study(dataset, study_dir.name, files)
                try:
                    study_dir.rmdir()  # empty once forwarded (a file arriving meanwhile keeps it)
                except OSError:
                    pass
        return stored

    def _forward_study(self, dataset: str | None, study: str, files: list[Path]) -> int:
        if dataset is not None:
            with self.sessions.begin() as session:
                current = assign_study(session, study, None, dataset=dataset)
            if current != dataset:
                log.warning("study %s was routed to dataset %s but is in %s; it stays there", study, dataset, current)
        batches: list[list[Path]] = [[]]
        size = 0
        for path in files:
            if size >= FORWARD_BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(path)
            size += path.stat().st_size
        pool = ThreadPoolExecutor(STOW_STREAMS)  # the PACS stores one request while the next uploads
        try:
            return sum(pool.map(self._store, batches))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _store(self, batch: list[Path]) -> int:
        raw = getattr(self.pacs, "store_files", None)  # the bytes as received, not decoded and re-encoded
        answer = raw([p.read_bytes() for p in batch]) if raw is not None else self.pacs.store_instances(
            [pydicom.dcmread(io.BytesIO(p.read_bytes())) for p in batch])
        failed = {str(item.ReferencedSOPInstanceUID): item.get("FailureReason", "?")
                  for item in getattr(answer, "FailedSOPSequence", None) or []}
        for path in batch:
            sop = path.stem
            if sop in failed:
                self.refused.mkdir(parents=True, exist_ok=True)
                os.replace(path, self.refused / path.name)
                (self.refused / f"{sop}.reason.txt").write_text(f"STOW-RS FailureReason {failed[sop]}\n")
                log.error("the PACS refused instance %s (FailureReason %s); kept in %s", sop, failed[sop], self.refused)
            else:
                path.unlink()
        return len(batch) - len(failed)


def run_receiver(settings: Settings) -> None:
    """``medimg receiver``: serve until SIGTERM/SIGINT."""
    import signal

    from medimg_hub.pacs.connection import pacs_connection

    receiver = Receiver(settings, pacs_connection(settings).client())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    receiver.start()
    print("DICOM receiver listening", flush=True)
    while not done.wait(1.0):
        pass
    receiver.stop()


__all__ = ["UNASSIGNED", "Receiver", "part10_header", "run_receiver"]
