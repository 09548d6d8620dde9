"""Why a delivery attempt failed. Every one is retried (with backoff) until ``max_attempts``; the
message is kept as the delivery's ``last_error`` and says which side failed and how."""

from __future__ import annotations

from medimg_kernel.errors import MedImgError


class DeliveryError(MedImgError, RuntimeError):
    """An attempt to deliver failed (root of the delivery errors).

    Attributes
    ----------
    target
        The ``[[destinations]]`` or ``[[webhooks]]`` name.
    status
        The HTTP status or DIMSE status the other side answered, or None (no answer).
    """

    def __init__(self, target: str, message: str, status: int | None = None) -> None:
        self.target = target
        self.status = status
        super().__init__(f"{target}: {message}")


class DestinationRefusedError(DeliveryError):
    """The destination answered and refused (an HTTP error, a STOW-RS failure, a rejected
    association or a C-STORE failure status)."""


class DestinationUnreachableError(DeliveryError, ConnectionError):
    """The destination did not answer (connection refused, timeout, TLS failure)."""


class SourceUnavailableError(DeliveryError):
    """The platform's own PACS could not give the instances to push (down, or the instance is gone)."""


class LeaseLostError(DeliveryError):
    """This worker's lease on the delivery lapsed mid-attempt and another worker took it over: this
    attempt stops and records nothing (the other worker's attempt counts)."""


__all__ = ["DeliveryError", "LeaseLostError", "DestinationRefusedError", "DestinationUnreachableError", "SourceUnavailableError"]
