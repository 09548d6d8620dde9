"""Announcing a finalised decision to a ``[[webhooks]]`` URL: a signed JSON POST.

The body (UTF-8 JSON, keys sorted)::

    {"event": "review.finalised", "idempotency_key": "<uuid>", "job_id": ..., "task_id": ...,
     "dataset": ..., "decision": "accepted" | "corrected" | "rejected", "decided_by": "<hub user>",
     "decided_at": "<ISO 8601 UTC>", "pipeline": {"id", "version"}, "model": {"name", "version"},
     "study_instance_uid": ..., "seg": [{"sop_instance_uid", "series_instance_uid"}], "sr": [...],
     "pushed_to": {"<destination>": "delivered" | "failed"}}

No patient attributes: UIDs, the decision and who made it. Headers: ``Content-Type:
application/json``, ``Idempotency-Key`` (stable across attempts), ``X-Medimg-Event``,
``X-Medimg-Delivery`` (the outbox row's id) and ``X-Medimg-Signature`` (:mod:`.signing`).
A 2xx answer delivers; any other answer, or none within ``timeout_s``, is retried.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from medimg_hub.delivery.errors import DestinationRefusedError, DestinationUnreachableError
from medimg_hub.delivery.outbox import DeliveryRecord
from medimg_hub.delivery.signing import SIGNATURE_HEADER, sign
from medimg_hub.settings.destinations import WebhookSettings

USER_AGENT = "medimg-platform-webhook/1"


def announcement(record: DeliveryRecord, pushed_to: dict[str, str]) -> bytes:
    """The body announcing ``record``'s decision (``pushed_to``: destination → delivery status)."""
    payload = record.payload
    body: dict[str, Any] = {k: v for k, v in payload.items() if k != "instances"}
    for role in ("seg", "sr"):
        body[role] = [{"sop_instance_uid": i["sop_instance_uid"], "series_instance_uid": i.get("series_instance_uid")}
                      for i in payload.get("instances", ()) if i["role"] == role]
    body.update(idempotency_key=record.idempotency_key, pushed_to=pushed_to)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class WebhookSender:
    """POSTs signed announcements to one webhook.

    Parameters
    ----------
    settings
        The ``[[webhooks]]`` table.
    secret
        The HMAC key (:func:`.signing.read_secret`).
    verify
        TLS verification: True (system CAs), or a CA bundle's path.
    """

    def __init__(self, settings: WebhookSettings, secret: bytes, verify: bool | str = True) -> None:
        self.name = settings.name
        self.settings = settings
        self._secret = secret
        self._session = requests.Session()
        self._session.trust_env = False  # never through a proxy from the environment
        self._session.verify = verify

    def post(self, record: DeliveryRecord, body: bytes) -> int:
        """Send ``body``; returns the 2xx status.

        Raises
        ------
        DestinationRefusedError
            Any answer other than 2xx (its status and the start of its body in the message).
        DestinationUnreachableError
            No answer within ``timeout_s`` (connection refused, timeout, TLS).
        """
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "Idempotency-Key": record.idempotency_key, "X-Medimg-Event": str(record.payload.get("event")),
                   "X-Medimg-Delivery": str(record.id), SIGNATURE_HEADER: sign(self._secret, body)}
        try:
            response = self._session.post(self.settings.url, data=body, headers=headers,
                                          timeout=self.settings.timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            raise DestinationUnreachableError(self.name, f"POST {self.settings.url}: {type(exc).__name__}: "
                                              f"{str(exc)[:300]}") from exc
        if not 200 <= response.status_code < 300:
            snippet = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
            raise DestinationRefusedError(self.name, f"POST {self.settings.url} answered HTTP {response.status_code}"
                                          + (f": {snippet}" if snippet else ""), response.status_code)
        return response.status_code

    def close(self) -> None:
        self._session.close()


__all__ = ["USER_AGENT", "WebhookSender", "announcement"]
