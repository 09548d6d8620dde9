"""Signed webhooks: the ``X-Medimg-Signature`` header, made by the platform and checked by receivers.

The scheme is Stripe's: the header is ``t=<unix seconds>,v1=<hex>``, where ``<hex>`` is the
HMAC-SHA256, keyed by the webhook's secret (``[[webhooks]] secret_file``), of the bytes
``b"<t>." + body``. Signing the timestamp with the body lets a receiver refuse a replayed request
(a timestamp older than its tolerance) and a changed one (any byte of the body). Each attempt is
signed afresh; the ``Idempotency-Key`` header stays the same across attempts, so a receiver that
got a delivery whose answer was lost acts on it once.

A receiver in Python::

    verify_signature(secret, request.headers["X-Medimg-Signature"], request.body)  # raises if bad
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

from medimg_kernel.errors import ConfigurationError, MedImgError

#: The request header carrying the signature.
SIGNATURE_HEADER = "X-Medimg-Signature"
#: Seconds a receiver should accept a signature's timestamp away from its own clock (either way).
DEFAULT_TOLERANCE_S = 300.0


class SignatureError(MedImgError, ValueError):
    """A webhook signature is malformed, does not match the body, or is too old; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"webhook signature refused: {reason}")


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Medimg-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds; default now)."""
    at = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={at},v1={_mac(secret, at, body)}"


def verify_signature(secret: bytes, header: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> int:
    """Check a signature header against ``body``; returns its timestamp (unix seconds).

    Parameters
    ----------
    secret
        The shared HMAC key.
    header
        The ``X-Medimg-Signature`` value (``t=...,v1=...``; several ``v1`` are allowed, one must match).
    body
        The raw request body, byte for byte as received.
    tolerance_s
        Largest accepted difference between the timestamp and ``now``, in seconds.
    now
        The receiver's clock (unix seconds; default: ``time.time()``).

    Raises
    ------
    SignatureError
        Malformed header, no matching ``v1``, or a timestamp outside the tolerance.
    """
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in fields if k.strip() == "t"]
    macs = [v.strip() for k, v in fields if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        raise SignatureError("the header must be 't=<unix seconds>,v1=<hex HMAC-SHA256>'")
    at = int(stamps[0])
    expected = _mac(secret, at, body)
    if not any(hmac.compare_digest(expected, mac) for mac in macs):
        raise SignatureError("no v1 matches the body (wrong secret, or the body changed)")
    clock = time.time() if now is None else now
    if abs(clock - at) > tolerance_s:
        raise SignatureError(f"timestamp {at} is {abs(clock - at):.0f} s from now (tolerance {tolerance_s:.0f} s)")
    return at


def read_secret(path: Path) -> bytes:
    """The HMAC key in ``path`` (surrounding whitespace stripped).

    Raises
    ------
    ConfigurationError
        The file is missing, empty, or readable by others than its owner (it must be mode 0600 or stricter).
    """
    if not path.is_file():
        raise ConfigurationError(f"webhook secret_file {str(path)!r} does not exist or is not a file")
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"webhook secret_file {str(path)!r} is readable by others "
                                 f"(mode {path.stat().st_mode & 0o777:o}): chmod 600 it")
    secret = path.read_bytes().strip()
    if not secret:
        raise ConfigurationError(f"webhook secret_file {str(path)!r} is empty: it must hold the HMAC key")
    return secret


__all__ = ["DEFAULT_TOLERANCE_S", "SIGNATURE_HEADER", "SignatureError", "read_secret", "sign", "verify_signature"]
