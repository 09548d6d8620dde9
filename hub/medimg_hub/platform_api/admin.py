"""Admin endpoints: ``GET {prefix}api/audit`` (the audit log, hub admins only) and
``GET {prefix}metrics`` (Prometheus; hub admins or tokens with ``read:metrics``).
"""

from __future__ import annotations

from datetime import datetime

from medimg_hub.platform_api.base import PlatformHandler

_FILTERS = ("user", "action", "outcome", "study_instance_uid", "dataset")


class AuditQueryHandler(PlatformHandler):
    """Query the audit log: ``?user=&action=&outcome=&study_instance_uid=&dataset=&since=&limit=&offset=``."""

    route = "api:audit"
    action = "audit.query"

    async def get(self) -> None:
        if not self.user.admin:
            self.refuse(403, "audit queries are for hub admins")
        filters: dict[str, object] = {k: self.get_query_argument(k) for k in _FILTERS
                                      if self.get_query_argument(k, None) is not None}
        try:
            if since := self.get_query_argument("since", None):
                filters["since"] = datetime.fromisoformat(since)
            filters["limit"] = min(int(self.get_query_argument("limit", "100")), 10000)
            filters["offset"] = int(self.get_query_argument("offset", "0"))
        except ValueError:
            self.refuse(400, "since must be ISO 8601, limit and offset integers")
        records = await self.ctx.run(lambda: self.ctx.audit.query(**filters))  # type: ignore[arg-type]
        self.audit_fields["detail"] = f"{len(records)} records"
        self.write_json([r.as_json() for r in records])


class MetricsHandler(PlatformHandler):
    """Prometheus exposition of :class:`~medimg_hub.platform_api.metrics.PlatformMetrics`."""

    route = "metrics"
    action = None  # type: ignore[assignment]  # scrapes are counted, not audited

    def get(self) -> None:
        if not (self.user.admin or "read:metrics" in self.user.scopes):
            self.refuse(403, "metrics need an admin or a read:metrics token")
        self.set_header("Content-Type", self.ctx.metrics.content_type)
        self.finish(self.ctx.metrics.exposition())


default_handlers = [(r"api/audit/?", AuditQueryHandler), (r"metrics/?", MetricsHandler)]
