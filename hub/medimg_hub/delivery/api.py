"""The outbox in the platform API, for hub admins: ``GET {prefix}api/deliveries`` lists deliveries
(``?status=pending|delivered|failed&job_id=&dataset=&limit=&offset=``, newest first) and
``POST {prefix}api/deliveries/{id}/retry`` sends one again now. Every call is audited; anyone
else gets 403."""

from __future__ import annotations

from medimg_hub.delivery.models import DeliveryStatus
from medimg_hub.delivery.outbox import DeliveryNotFoundError
from medimg_hub.platform_api.base import PlatformHandler

_STATUSES = {s.value for s in DeliveryStatus}


class DeliveriesHandler(PlatformHandler):
    """List deliveries with their status, attempts, next attempt and last error."""

    route = "api:deliveries"
    action = "delivery.list"

    async def get(self) -> None:
        if not self.user.admin:
            self.refuse(403, "deliveries are for hub admins")
        status = self.get_query_argument("status", None)
        if status is not None and status not in _STATUSES:
            self.refuse(400, f"status must be one of {sorted(_STATUSES)}")
        try:
            limit = min(int(self.get_query_argument("limit", "100")), 10000)
            offset = int(self.get_query_argument("offset", "0"))
        except ValueError:
            self.refuse(400, "limit and offset must be integers")
        job_id, dataset = self.get_query_argument("job_id", None), self.get_query_argument("dataset", None)
        records = await self.ctx.run(lambda: self.ctx.deliveries.list_deliveries(status=status, job_id=job_id, dataset=dataset,
                                                                      limit=limit, offset=offset))
        self.audit_fields["detail"] = f"{len(records)} deliveries"
        self.write_json([r.as_json() for r in records])


class DeliveryRetryHandler(PlatformHandler):
    """Send a failed or waiting delivery again now (a fresh count of attempts)."""

    route = "api:deliveries:retry"
    action = "delivery.retry"

    async def post(self, delivery_id: str) -> None:
        if not self.user.admin:
            self.refuse(403, "deliveries are for hub admins")
        self.audit_fields["detail"] = f"delivery {delivery_id}"
        try:
            record = await self.ctx.run(self.ctx.deliveries.retry, int(delivery_id), self.user.name)
        except DeliveryNotFoundError:
            self.refuse(404, f"no delivery {delivery_id}")
        self.audit_fields["dataset"] = record.dataset
        self.write_json(record.as_json())


default_handlers = [
    (r"api/deliveries/?", DeliveriesHandler),
    (r"api/deliveries/([0-9]{1,12})/retry/?", DeliveryRetryHandler),
]
