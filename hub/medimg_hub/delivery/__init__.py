"""Results leaving the platform: finalised SEG and SR pushed to hospital PACS (STOW-RS or C-STORE)
and each final decision announced by a signed webhook, through an outbox in the platform database.

:mod:`.models` (the ``deliveries`` table), :mod:`.outbox` (enqueue with the decision, claim with a
lease, backoff, retry), :mod:`.signing` (``X-Medimg-Signature``), :mod:`.pacs_push` and
:mod:`.webhook` (the senders), :mod:`.worker` (``medimg deliveries run``), :mod:`.api` (the admins'
``GET api/deliveries``). Settings: ``[[destinations]]``, ``[[webhooks]]``, ``[deliveries]`` and
``export_to`` / ``webhook`` of ``[[datasets]]``.
May import: ``medimg_hub.pacs``, ``medimg_hub.access``, ``medimg_hub.db``, ``medimg_hub.settings``,
``medimg_hub.platform_api.base``, ``medimg_kernel``. The pipeline imports it to enqueue (below it).
"""

from medimg_hub.delivery.models import Delivery, DeliveryKind, DeliveryStatus
from medimg_hub.delivery.outbox import DeliveryRecord, FinalDecision, InstanceRef, Outbox, enqueue
from medimg_hub.delivery.signing import SignatureError, sign, verify_signature

__all__ = ["Delivery", "DeliveryKind", "DeliveryRecord", "DeliveryStatus", "FinalDecision", "InstanceRef", "Outbox",
           "SignatureError", "enqueue", "sign", "verify_signature"]
