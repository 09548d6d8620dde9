"""What every handler shares: the service context and a base handler that authenticates,
answers errors with fixed bodies, and audits and counts every request when it finishes.

Error bodies depend only on the status (``{"error": "forbidden"}`` for every 403, ...), so
a refusal never tells a study in another dataset from one that does not exist. The reason
is kept in the audit row's ``detail``; only a 400 (a malformed request) also says it to the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tornado.web import Finish, RequestHandler

from medimg_hub.access.audit import AuditLog, AuditRecord
from medimg_hub.access.datasets import DatasetDirectory
from medimg_hub.access.identities import AuthFailure, HubIdentities, Identity
from medimg_hub.access.models import Outcome
from medimg_hub.platform_api.metrics import PlatformMetrics
from medimg_hub.settings import Settings

if TYPE_CHECKING:  # the gateway builds on this module; the context only holds its Orthanc client
    from medimg_hub.platform_api.gateway.upstream import Orthanc

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The one body of each error status.
ERROR_BODIES = {400: "bad request", 401: "authentication required", 403: "forbidden", 404: "not found",
                405: "method not allowed", 413: "request too large", 502: "upstream unavailable"}


@dataclass
class PlatformContext:
    """Everything the handlers use, built once by :func:`medimg_hub.platform_api.app.build_context`."""

    settings: Settings
    prefix: str
    identities: HubIdentities
    directory: DatasetDirectory
    audit: AuditLog
    metrics: PlatformMetrics
    orthanc: Orthanc
    tasks: Any  # TaskAccess (medimg_hub.pipeline.access), typed loosely to keep this module free of the task service
    review: Any  # ReviewAccess (medimg_hub.review.access), likewise
    executor: ThreadPoolExecutor
    #: DatasetOperations (medimg_hub.datasets.operations), typed loosely like ``tasks``.
    datasets: Any = None
    #: The hub's OAuth for the service's browser pages (the datasets admin page).
    page_auth: Any = None
    deliveries: Any = None  # Outbox (medimg_hub.delivery.outbox), likewise
    audit_executor: Executor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="audit"))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (database, task service) in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class PlatformHandler(RequestHandler):
    """Base of every handler: authentication in :meth:`prepare`, audit and metrics in :meth:`on_finish`.

    Subclasses set :attr:`route` (metric label), :attr:`action` (audit action) and may fill
    :attr:`audit_fields` (study/series/SOP UIDs, dataset, detail).
    """

    route = "unknown"
    action = "unknown"
    #: Whether requests need a hub token (False only for the health check).
    authenticated = True
    #: Streaming handlers (``@stream_request_body``) close the connection when refusing in prepare().
    close_on_refusal = False
    _prepared = False

    def initialize(self, context: PlatformContext) -> None:
        self.ctx = context
        self.request_id = str(uuid.uuid4())
        self.identity: Identity | None = None
        self.audit_fields: dict[str, Any] = {}
        self.bytes_out = 0
        self.bytes_in = 0
        self._started = time.perf_counter()
        self.set_default_headers()

    def set_default_headers(self) -> None:
        # called by tornado before initialize() too, and again by clear()
        if hasattr(self, "request_id"):
            self.set_header("X-Request-Id", self.request_id)
        self.set_header("Cache-Control", "no-store")
        self.clear_header("Server")

    async def prepare(self) -> None:
        if not self.authenticated:
            return
        try:
            self.identity = await self.ctx.identities.identify(self.request.headers)
        except AuthFailure as failure:
            self.refuse(failure.status, failure.reason)

    def prepared(self) -> None:
        """Mark the end of prepare() (refusals after it keep the connection)."""
        self._prepared = True

    @property
    def user(self) -> Identity:
        assert self.identity is not None  # noqa: S101 - prepare() refused the request otherwise
        return self.identity

    def refuse(self, status: int, detail: str) -> NoReturn:
        """Answer ``status`` with its fixed body, keep ``detail`` for the audit log, stop the handler.

        A 400 also tells the caller what is malformed (``detail``): it describes their request's
        syntax, never data; every other status keeps its one body.
        """
        self.audit_fields["detail"] = detail
        self.clear()
        self.set_status(status)
        if status == 401:
            self.set_header("WWW-Authenticate", 'token realm="jupyterhub"')
        if self.close_on_refusal and not self._prepared:
            # tornado drops the connection of a streaming handler that answers before reading the
            # body; say so, or the proxy reuses the socket and its next request fails (503)
            self.set_header("Connection", "close")
        body = {"error": ERROR_BODIES.get(status, "error")}
        if status == 400:
            body["detail"] = detail
        self.write_json(body)
        raise Finish()

    def body(self) -> dict[str, Any]:
        """The request's JSON object body (empty: ``{}``); a 400 naming the problem otherwise."""
        try:
            value = json.loads(self.request.body or b"{}")
        except ValueError:
            self.refuse(400, "body is not JSON")
        if not isinstance(value, dict):
            self.refuse(400, "body must be a JSON object")
        return value

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(value, default=str).encode())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.audit_fields.setdefault("detail", self._reason or "error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": ERROR_BODIES.get(status_code, "error")}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # tornado's default logs the request URI (UIDs) with the trace; keep the trace, not the URI
        if isinstance(value, Finish):
            return
        log.error("request %s failed: %s", self.request_id, type(value).__name__, exc_info=(typ, value, tb))

    def _outcome(self) -> Outcome:
        status = self.get_status()
        if status >= 500:
            return Outcome.ERROR
        return Outcome.ALLOWED if status < 400 else Outcome.DENIED

    def on_finish(self) -> None:
        outcome = self._outcome()
        self.ctx.metrics.observe(self.route, outcome.value, time.perf_counter() - self._started,
                                 self.bytes_out, self.bytes_in)
        if self.action is None:
            return
        who = self.identity
        record = AuditRecord(
            user=who.name if who else None, groups=who.groups if who else (), action=self.action,
            outcome=outcome, status=self.get_status(), request_id=self.request_id,
            study_instance_uid=self.audit_fields.get("study"), series_instance_uid=self.audit_fields.get("series"),
            sop_instance_uid=self.audit_fields.get("sop"), dataset=self.audit_fields.get("dataset"),
            detail=self.audit_fields.get("detail"),
        )
        future = self.ctx.audit_executor.submit(self.ctx.audit.append, record)
        future.add_done_callback(_report_audit_failure)


def _report_audit_failure(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("an audit record could not be written: %s", type(exc).__name__)


class HealthHandler(PlatformHandler):
    """``GET {prefix}health``: 200 when the service runs (no authentication, not audited)."""

    route = "health"
    action = None  # type: ignore[assignment]
    authenticated = False

    def get(self) -> None:
        self.write_json({"status": "ok"})
