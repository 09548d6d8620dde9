"""Where finalised results go: the ``[[destinations]]`` and ``[[webhooks]]`` tables and the
``[deliveries]`` section of ``medimg.toml`` (issue #13 item 3).

A ``[[datasets]]`` table names them (``export_to = ["hospital-pacs"]``, ``webhook = "ris"``); when an
attending finalises a review of that dataset, the platform pushes the reviewed SEG and SR to each
destination and announces the decision to the webhook (:mod:`medimg_hub.export`). Kept apart from
:mod:`medimg_hub.settings.sections` so the knobs and their checks sit together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from medimg_kernel.errors import ConfigurationError

from medimg_hub.settings.remotes import check_service

#: Kinds of ``[[destinations]]``: a DICOMweb service (STOW-RS) or a DICOM node (C-STORE).
DESTINATION_KINDS = ("dicomweb", "dicom")
_AET = re.compile(r"[\x20-\x7e]{1,16}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class RetrySettings:
    """How a failing destination or webhook is retried (shared by both kinds of table).

    Attempt ``n`` (1-based) that fails waits ``min(max_backoff_s, backoff_s × 2^(n-1))`` seconds,
    times a random factor in [0.5, 1] (jitter), before attempt ``n + 1``. After ``max_attempts``
    failures the delivery is ``failed``: kept, listed, and sent again by ``medimg deliveries retry ID``.
    """

    #: Attempts before a delivery is marked failed (at least 1).
    max_attempts: int = 20
    #: Seconds before the second attempt; doubles with every failure, up to max_backoff_s.
    backoff_s: float = 10.0
    max_backoff_s: float = 3600.0
    #: Seconds one attempt may take (a PACS push: each request; a webhook: connect + answer).
    timeout_s: float = 30.0


@dataclass(frozen=True)
class DestinationSettings(RetrySettings):
    """A PACS finalised results are pushed to (``[[destinations]]``), e.g. the hospital's clinical PACS.

    ``kind = "dicomweb"``: STOW-RS to ``url`` with the keys of ``[pacs]`` for a PACS by URL (``auth``,
    ``credentials_file``, client certificate, TLS). ``kind = "dicom"``: C-STORE to the DICOM node
    ``called_aet@host:port``, calling as ``calling_aet``.
    """

    name: str = ""
    kind: str = "dicomweb"
    #: "dicomweb": the DICOMweb base URL, e.g. "https://pacs.example.org/dicom-web", and how the
    #: platform authenticates ("none", "basic", "bearer", "client-certificate", as ``[pacs] auth``).
    url: str = ""
    auth: str = "none"
    credentials_file: str = ""
    client_certificate: str = ""
    client_key: str = ""
    verify_tls: bool = True
    ca_file: str = ""
    #: "dicom": the node's address, its (called) AE title and ours (calling).
    host: str = ""
    port: int = 104
    called_aet: str = ""
    calling_aet: str = "MEDIMG"


@dataclass(frozen=True)
class WebhookSettings(RetrySettings):
    """A URL that is told of every finalised decision (``[[webhooks]]``): a signed JSON POST.

    Headers: ``X-Medimg-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` keyed by
    the secret in ``secret_file``, ``Idempotency-Key`` (the same on every attempt of one
    announcement), ``X-Medimg-Event``. Receivers verify the signature, refuse timestamps older than a
    few minutes, and act once per idempotency key. Any 2xx answer is success; anything else is retried.
    """

    name: str = ""
    url: str = ""
    #: The HMAC key: a file readable by the platform only (mode 0600), its content (stripped) the key.
    secret_file: str = ""
    verify_tls: bool = True
    ca_file: str = ""
    timeout_s: float = 10.0


@dataclass(frozen=True)
class DeliverySettings:
    """The delivery worker (``medimg deliveries run``; ``medimg up`` starts it when a dataset exports)."""

    #: Seconds between looks at the outbox for deliveries that are due.
    poll_interval_s: float = 1.0
    #: Seconds a worker holds a delivery it is sending; another worker may take it over after that
    #: (the first one died). Must exceed every destination's and webhook's timeout_s.
    lease_s: float = 300.0


def _check_retry(where: str, table: RetrySettings) -> None:
    if table.max_attempts < 1:
        raise ConfigurationError(f"{where}: max_attempts={table.max_attempts} must be at least 1")
    for key in ("backoff_s", "max_backoff_s", "timeout_s"):
        if getattr(table, key) <= 0:
            raise ConfigurationError(f"{where}: {key}={getattr(table, key)} must be positive (seconds)")
    if table.max_backoff_s < table.backoff_s:
        raise ConfigurationError(f"{where}: max_backoff_s={table.max_backoff_s} is below backoff_s={table.backoff_s}")


def _check_names(table: str, names: Sequence[str]) -> None:
    for i, name in enumerate(names):
        if not _NAME.fullmatch(name):
            raise ConfigurationError(f"[[{table}]] number {i + 1}: name={name!r} must be 1-64 letters, digits, "
                                     "'.', '_' or '-'")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"[[{table}]] names must be unique: {list(names)}")


def _check_destination(i: int, dest: DestinationSettings) -> None:
    where = f"[[destinations]] number {i + 1} ({dest.name})"
    if dest.kind not in DESTINATION_KINDS:
        raise ConfigurationError(f"{where}: kind={dest.kind!r} must be one of {DESTINATION_KINDS}")
    _check_retry(where, dest)
    if dest.kind == "dicomweb":
        check_service(where, dest)
        if dest.auth == "client-certificate" and not (dest.client_certificate and dest.client_key):
            raise ConfigurationError(f"{where}: auth='client-certificate' needs client_certificate and client_key")
        return
    if not dest.host:
        raise ConfigurationError(f"{where}: kind='dicom' needs host (the DICOM node's address)")
    if not 1 <= dest.port <= 65535:
        raise ConfigurationError(f"{where}: port={dest.port} is not a valid TCP port")
    for key in ("called_aet", "calling_aet"):
        value = getattr(dest, key)
        if not _AET.fullmatch(value) or value != value.strip():
            raise ConfigurationError(f"{where}: {key}={value!r} must be 1-16 printable characters, no spaces around")


def _check_webhook(i: int, hook: WebhookSettings) -> None:
    where = f"[[webhooks]] number {i + 1} ({hook.name})"
    if not hook.url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{where}: url={hook.url!r} must be an http(s) URL")
    if not hook.secret_file:
        raise ConfigurationError(f"{where}: secret_file is required (the HMAC-SHA256 key, a file of mode 0600)")
    _check_retry(where, hook)


def validate_destinations(destinations: tuple[DestinationSettings, ...], webhooks: tuple[WebhookSettings, ...],
                          deliveries: DeliverySettings, datasets: Sequence[tuple[str, tuple[str, ...], str]]) -> None:
    """Refuse ``[[destinations]]``, ``[[webhooks]]``, ``[deliveries]`` and the datasets' references to
    them that cannot work, naming the table and key.

    Parameters
    ----------
    destinations, webhooks, deliveries
        The tables as read.
    datasets
        ``(name, export_to, webhook)`` of every ``[[datasets]]`` table.
    """
    _check_names("destinations", [d.name for d in destinations])
    _check_names("webhooks", [w.name for w in webhooks])
    for i, dest in enumerate(destinations):
        _check_destination(i, dest)
    for i, hook in enumerate(webhooks):
        _check_webhook(i, hook)
    if deliveries.poll_interval_s <= 0:
        raise ConfigurationError(f"[deliveries] poll_interval_s={deliveries.poll_interval_s} must be positive (seconds)")
    longest = max([t.timeout_s for t in (*destinations, *webhooks)], default=0.0)
    if deliveries.lease_s <= 2 * longest:
        raise ConfigurationError(f"[deliveries] lease_s={deliveries.lease_s} must exceed twice the longest timeout_s "
                                 f"({longest} s), or a slow attempt could be sent twice at once")
    known_dest, known_hooks = [d.name for d in destinations], [w.name for w in webhooks]
    for name, export_to, webhook in datasets:
        unknown = [d for d in export_to if d not in known_dest]
        if unknown:
            raise ConfigurationError(f"[[datasets]] {name}: export_to names {unknown}, which are not "
                                     f"[[destinations]]; known: {known_dest}")
        if len(set(export_to)) != len(export_to):
            raise ConfigurationError(f"[[datasets]] {name}: export_to lists a destination twice: {list(export_to)}")
        if webhook and webhook not in known_hooks:
            raise ConfigurationError(f"[[datasets]] {name}: webhook={webhook!r} is not a [[webhooks]] name; "
                                     f"known: {known_hooks}")


__all__ = ["DESTINATION_KINDS", "DeliverySettings", "DestinationSettings", "RetrySettings", "WebhookSettings",
           "validate_destinations"]
