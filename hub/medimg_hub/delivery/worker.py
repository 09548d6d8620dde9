"""The delivery worker: sends what is due in the outbox, settles each attempt, loops.

``medimg deliveries run`` (``medimg up`` starts it when a dataset exports or announces). Each pass
claims due rows under a lease (:meth:`~.outbox.Outbox.claim`), and for each: a PACS push reads the
decision's SEG and SR from the platform PACS and stores them at the destination; a webhook posts
the signed announcement. Success or failure is recorded with its audit row; a failure is retried
after the table's backoff. Several workers may run (on one or more machines): a row is sent by one
at a time (a push renews its lease between reading and storing; a worker that lost it stops). A worker
killed mid-send loses nothing: its lease lapses and the row is sent again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from pathlib import Path

from medimg_kernel.dicomweb import DICOMwebProtocol
from medimg_kernel.errors import ConfigurationError, MedImgError

from medimg_hub.db import make_engine
from medimg_hub.delivery.errors import DeliveryError, LeaseLostError
from medimg_hub.delivery.models import DeliveryKind
from medimg_hub.delivery.outbox import DeliveryRecord, Outbox, instances_of
from medimg_hub.delivery.pacs_push import DICOMwebDestination, DIMSEDestination, Destination, fetch_instances
from medimg_hub.delivery.signing import read_secret
from medimg_hub.delivery.webhook import WebhookSender, announcement
from medimg_hub.pacs.connection import pacs_connection, service_connection
from medimg_hub.settings import Settings
from medimg_hub.settings.destinations import RetrySettings

log = logging.getLogger(__name__)

#: Printed once the worker runs (``medimg up`` waits for it).
READY_TEXT = "delivery worker running"


class DeliveryWorker:
    """Sends due deliveries for one process.

    Parameters
    ----------
    settings
        The platform settings (``[[destinations]]``, ``[[webhooks]]``, ``[deliveries]``, ``[pacs]``).
    outbox
        The outbox on the platform database.
    source
        The platform PACS to read results from (default: ``[pacs]``).
    owner
        This worker's name in leases (default: host, pid and a random suffix).
    """

    def __init__(self, settings: Settings, outbox: Outbox, source: DICOMwebProtocol | None = None,
                 owner: str | None = None) -> None:
        self.settings = settings
        self.outbox = outbox
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._source = source
        self._webhooks: dict[str, WebhookSender] = {}

    @property
    def source(self) -> DICOMwebProtocol:
        if self._source is None:
            self._source = pacs_connection(self.settings).client()
        return self._source

    def run_once(self, limit: int = 10) -> int:
        """Claim and send up to ``limit`` due deliveries; returns how many were delivered."""
        delivered = 0
        for record in self.outbox.claim(self.owner, self.settings.deliveries.lease_s, limit):
            delivered += self.send(record)
        return delivered

    def send(self, record: DeliveryRecord) -> bool:
        """One attempt at one delivery, settled in the outbox; True if delivered."""
        retry: RetrySettings = self._table(record) or RetrySettings()
        try:
            if record.kind is DeliveryKind.WEBHOOK:
                status, detail = self._announce(record), "announced"
            else:
                status, detail = 200, self._push(record)
        except LeaseLostError:
            log.warning("delivery %d (%s %s): lease lost mid-attempt; another worker sends it", record.id,
                        record.kind.value, record.target)
            return False
        except (MedImgError, OSError) as exc:
            status = getattr(exc, "status", None) or 502
            log.warning("delivery %d (%s %s) failed: %s", record.id, record.kind.value, record.target, exc)
            self.outbox.fail(record.id, self.owner, str(exc), retry, status=status if status < 1000 else 502)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the other deliveries; kept as the error
            log.exception("delivery %d (%s %s) failed unexpectedly", record.id, record.kind.value, record.target)
            self.outbox.fail(record.id, self.owner, f"{type(exc).__name__}: {exc}", retry)
            return False
        self.outbox.succeed(record.id, self.owner, detail, status)
        log.info("delivery %d (%s %s) delivered after %d attempts", record.id, record.kind.value, record.target,
                 record.attempts + 1)
        return True

    def _table(self, record: DeliveryRecord) -> RetrySettings | None:
        tables = self.settings.webhooks if record.kind is DeliveryKind.WEBHOOK else self.settings.destinations
        return next((t for t in tables if t.name == record.target), None)

    def _missing(self, record: DeliveryRecord) -> ConfigurationError:
        table = "webhooks" if record.kind is DeliveryKind.WEBHOOK else "destinations"
        return ConfigurationError(f"no [[{table}]] table is called {record.target!r} any more; put it back in the "
                                  f"settings (the delivery waits), then `medimg deliveries retry {record.id}`")

    def _push(self, record: DeliveryRecord) -> str:
        dest = next((d for d in self.settings.destinations if d.name == record.target), None)
        if dest is None:
            raise self._missing(record)
        destination: Destination
        if dest.kind == DeliveryKind.DICOM.value:
            destination = DIMSEDestination(dest)
        else:
            connection = service_connection(self.settings, dest, f"[[destinations]] {dest.name}:")
            destination = DICOMwebDestination(dest.name, connection, dest.timeout_s)
        study = record.payload.get("study_instance_uid")
        if not study:
            raise DeliveryError(record.target, f"job {record.job_id} names no StudyInstanceUID")
        datasets = fetch_instances(self.source, str(study), instances_of(record.payload))
        self._keep_lease(record)  # reading may have taken a while: hold the row for the push itself
        return destination.store_instances(datasets)

    def _keep_lease(self, record: DeliveryRecord) -> None:
        if not self.outbox.renew(record.id, self.owner, self.settings.deliveries.lease_s):
            raise LeaseLostError(record.target, f"delivery {record.id}: the lease lapsed and another worker took it")

    def _announce(self, record: DeliveryRecord) -> int:
        sender = self._webhooks.get(record.target)
        if sender is None:
            hook = next((w for w in self.settings.webhooks if w.name == record.target), None)
            if hook is None:
                raise self._missing(record)
            verify: bool | str = hook.verify_tls
            if hook.verify_tls and hook.ca_file:
                verify = str(self.settings.resolve(Path(hook.ca_file)))
            secret = read_secret(self.settings.resolve(Path(hook.secret_file)))
            sender = self._webhooks[record.target] = WebhookSender(hook, secret, verify)
        return sender.post(record, announcement(record, self.outbox.siblings(record)))

    def close(self) -> None:
        for sender in self._webhooks.values():
            sender.close()


def run_deliveries(settings: Settings, stop: threading.Event | None = None) -> None:
    """Loop until SIGTERM/SIGINT (or ``stop`` is set), a pass every ``[deliveries] poll_interval_s``."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    engine = make_engine(settings.database_url)
    worker = DeliveryWorker(settings, Outbox(engine))
    log.info("%s as %s, every %.1f s", READY_TEXT, worker.owner, settings.deliveries.poll_interval_s)
    try:
        while not stop.is_set():
            try:
                while worker.run_once() and not stop.is_set():
                    pass  # more may be due: no wait while deliveries succeed
            except Exception:  # noqa: BLE001 - a database hiccup: log, try again next pass
                log.exception("delivery pass failed")
            stop.wait(settings.deliveries.poll_interval_s)
    finally:
        worker.close()
        engine.dispose()


__all__ = ["READY_TEXT", "DeliveryWorker", "run_deliveries"]
