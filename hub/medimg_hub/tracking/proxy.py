"""MLflow behind the hub's login: a JupyterHub-managed service at ``/services/mlflow/``.

The tracking server (:mod:`medimg_hub.tracking.server`) listens on 127.0.0.1 and has no login
that knows the hub. This service stands in front of it:

* **Who.** Browsers sign in with the hub's OAuth (cookie ``jupyterhub-services-mlflow``);
  scripts and kernels send a hub token as ``Authorization: token <t>`` or ``Bearer <t>`` (the
  MLflow client sends ``MLFLOW_TRACKING_TOKEN`` as a Bearer token). The token must hold
  ``access:services!service=mlflow`` and its owner must be a hub admin or in a group of
  :data:`~medimg_hub.hubconf.roles.MLFLOW_GROUPS` (engineers, directors, admins: read and
  write). Clinicians, services and everyone else get 403. Without credentials a browser page
  load is redirected to the hub's login; anything else gets 403.
* **Cross-site requests.** A cookie-authenticated request that changes something must come from
  the same origin (``Sec-Fetch-Site: same-origin``, or an ``Origin`` equal to the Host) or carry
  the hub's xsrf token; MLflow's own page scripts send neither token, so the Fetch Metadata check
  is what lets the UI work. On one origin the hub's pages, this service and users' servers
  trust each other (JupyterHub's model); serve users' servers on subdomains to separate them.
* **What is forwarded.** Every method, the path unchanged below ``/services/mlflow`` (the server
  runs with that ``--static-prefix``) and the query, the Host header (checked by MLflow's
  ``--allowed-hosts``); never the hub's cookies, the caller's token or ``Origin`` (checked
  here, and unknown to MLflow). Bodies stream both ways with back-pressure: an artifact is never
  held whole in memory.
* **As whom.** Each user reaches MLflow with an MLflow account of their own
  (:mod:`medimg_hub.tracking.accounts`): MLflow's permissions confine a dataset's experiments
  (its pipeline jobs' runs) to that dataset's grantees, kept in step with the grants
  before each request is forwarded, and runs are credited to the user (``runs/create`` gets the
  hub user as ``user_id`` and ``mlflow.user``). Experiment tags ``medimg.*``, experiment names
  under ``pipeline/`` and the ``mlflow.user`` tag are the platform's: users' requests setting them
  are refused (403).
* **Clinical aliases are an approval.** Setting or deleting an alias that clinical pipelines load
  (``[mlflow] model_alias``, ``champion`` by default) is allowed to directors and hub admins only;
  the request body is read (it is a few bytes of JSON) to see which alias it moves, and the move is
  audited with the model, alias, version and approver, and made with the platform account (the
  approver may only read the model in MLflow). Engineers set any other alias on their models.
* **Audit.** Every request except successful static assets becomes a row in the platform's audit
  log (action ``mlflow``; detail = method and path below the prefix, never the query string).

``python -m medimg_hub.tracking.proxy --config FILE`` (JupyterHub starts it, see
hub/jupyterhub_config.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders
from tornado.iostream import StreamClosedError
from tornado.web import Application, Finish, RedirectHandler, RequestHandler, stream_request_body

from medimg_hub.access.audit import AuditLog, AuditRecord
from medimg_hub.access.identities import AuthFailure, HubIdentities
from medimg_hub.access.models import Outcome
from medimg_hub.access.origin import is_navigation, same_origin
from medimg_hub.hubconf.roles import ALIAS_APPROVERS, MLFLOW_ACCESS, MLFLOW_GROUPS
from medimg_hub.servers.runner import run_service, stop_requested
from medimg_hub.tracking.accounts import (RESERVED_TAG_PREFIX, AdminApi, MlflowAccounts, TrackingAccessError,
                                          reserved_experiment_name)
from medimg_hub.settings import MLFLOW_PREFIX, Settings, load_settings
from medimg_hub.tracking.server import account_key, credentials

log = logging.getLogger(__name__)

#: Largest request body (artifact upload) accepted, bytes.
MAX_UPLOAD_BYTES = 64 << 30
#: Largest response body (artifact download) passed on, bytes.
MAX_DOWNLOAD_BYTES = 1 << 40
#: Request-body chunks queued between the caller and MLflow (back-pressure beyond this).
BODY_QUEUE_CHUNKS = 8
#: Seconds to connect to MLflow, and for a whole request (large artifacts).
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 3600.0
#: Simultaneous requests to MLflow (the UI fires many at once).
MAX_UPSTREAM_REQUESTS = 64
#: Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded either way.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade"})
#: Request headers not forwarded: the hub's credentials and the origin checked here.
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {"authorization", "cookie", "origin", "x-xsrftoken", "x-csrftoken",
                                        "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}
#: Response headers not passed on: cookies for the hub's origin are the hub's business, and MLflow's
#: own login (the platform account, added here) is never offered to browsers.
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"set-cookie", "server", "www-authenticate"}
#: Methods that may carry a body.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Requests whose (small JSON) body the proxy reads whole and checks before forwarding (REST and
#: the ``ajax-api`` that MLflow's own pages use): alias moves (POST sets, DELETE deletes),
#: experiment names and tags, and run creation (credited to the caller).
INSPECTED_ENDPOINT = re.compile(
    r"(?:ajax-)?api/2\.0/mlflow/(registered-models/alias|experiments/create|experiments/update"
    r"|experiments/set-experiment-tag|runs/create|runs/set-tag)")
#: Largest inspected request body read (bytes).
MAX_INSPECTED_BODY = 1 << 20
#: Run tag MLflow shows as a run's user.
USER_TAG = "mlflow.user"


@dataclass
class ProxyContext:
    """What the handler uses, built once by :func:`build_context`.

    Attributes
    ----------
    upstream
        The tracking server's root, e.g. ``http://127.0.0.1:5500`` (paths below
        :data:`~medimg_hub.settings.MLFLOW_PREFIX` are appended).
    prefix
        This service's path below the hub (``/services/mlflow/``).
    hub_auth
        OAuth client and token checker of the service.
    identities
        Groups and admin flag of users, asked with the service's token.
    client
        HTTP client to the tracking server.
    audit
        The platform's audit log (``None``: log lines only).
    upstream_auth
        The ``Authorization`` header of the platform's MLflow account (MLflow's basic-auth app,
        :mod:`medimg_hub.tracking.server`), added to every forwarded request; empty: none.
    """

    upstream: str
    prefix: str
    hub_auth: HubOAuth
    identities: HubIdentities
    client: AsyncHTTPClient
    audit: AuditLog | None
    upstream_auth: str = ""
    #: Aliases that clinical pipelines load: only :data:`~medimg_hub.hubconf.roles.ALIAS_APPROVERS`
    #: (and hub admins) may set or delete them.
    protected_aliases: frozenset[str] = frozenset()
    #: Users' own MLflow accounts (``None``: every request as the platform account, for tests of
    #: the proxy alone).
    accounts: MlflowAccounts | None = None
    account_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="mlflow-accounts"))
    audit_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="mlflow-audit"))


class ProxyRefused(Exception):
    """A request the proxy answers itself (``status``), with the reason kept for the audit log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@stream_request_body
class MlflowProxyHandler(HubOAuthenticated, RequestHandler):  # type: ignore[misc]
    """Every request below ``/services/mlflow/``: authenticate, check the role, forward, audit."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, context: ProxyContext) -> None:
        self.ctx = context
        self.hub_auth = context.hub_auth
        self.request_id = str(uuid.uuid4())
        self.user_name: str | None = None
        self.groups: tuple[str, ...] = ()
        self.detail: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._started = time.perf_counter()
        self._body: asyncio.Queue[bytes | None] | None = None
        self._upstream: asyncio.Future[Any] | None = None
        self._status_line: tuple[int, str] | None = None
        self._upstream_headers = HTTPHeaders()
        self._headers_applied = False
        self.admin = False
        self._inspected: str | None = None
        self._inspected_body: bytearray | None = None
        self._as_platform = False
        self._account_auth = ""

    # --- authentication ---------------------------------------------------------------------------

    def check_xsrf_cookie(self) -> None:
        """Cookie-authenticated requests: same origin (Fetch Metadata), else the hub's xsrf token."""
        if same_origin(self.request.headers, self.request.host):
            return
        super().check_xsrf_cookie()

    async def prepare(self) -> None:
        self.request.connection.set_max_body_size(MAX_UPLOAD_BYTES)
        try:
            await self._authorise()
        except ProxyRefused as refused:
            self._refuse(refused.status, refused.reason)
        route = self.request.path[len(self.ctx.prefix):]
        inspected = INSPECTED_ENDPOINT.fullmatch(route)
        if inspected and self.request.method in ("POST", "DELETE"):
            self._inspected = inspected.group(1)
            self.request.connection.set_max_body_size(MAX_INSPECTED_BODY)
            self._inspected_body = bytearray()  # read whole, checked in _forward, then sent
            return
        self._start_upstream()

    async def _authorise(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            if is_navigation(self.request.method or "", self.request.headers):
                self.detail = "not signed in: redirected to the hub's login"
                self.redirect(self.get_login_url())
                raise Finish()
            raise ProxyRefused(403, "no valid hub token or session")
        try:
            self.check_hub_user(model)
        except UserNotAllowed:
            raise ProxyRefused(403, f"token lacks {MLFLOW_ACCESS}") from None
        self.user_name = str(model["name"])
        if model.get("kind", "user") != "user":
            raise ProxyRefused(403, "services may not use MLflow through the hub")
        try:
            self.groups, admin = await self.ctx.identities.groups_of(self.user_name)
        except AuthFailure as failure:
            raise ProxyRefused(403, failure.reason) from None
        self.admin = admin
        if not admin and not set(self.groups) & set(MLFLOW_GROUPS):
            raise ProxyRefused(403, "not an engineer, director or admin")
        if self.ctx.accounts is not None:
            loop = asyncio.get_running_loop()
            try:
                username, password = await loop.run_in_executor(
                    self.ctx.account_executor, self.ctx.accounts.prepare, self.user_name, self.groups, admin)
            except TrackingAccessError as exc:
                log.error("MLflow account of %s not ready: %s", self.user_name, exc)
                raise ProxyRefused(502, f"MLflow account not ready: {exc}") from None
            self._account_auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def _refuse(self, status: int, reason: str) -> NoReturn:
        self.detail = reason
        self.clear()
        self.set_status(status)
        if self.request.method in BODY_METHODS:
            # the body was not read: tornado drops the connection, so the proxy must not reuse it
            self.set_header("Connection", "close")
        self.set_header("Content-Type", "application/json")
        bodies = {400: b'{"error": "bad request"}', 403: b'{"error": "forbidden"}'}
        self.finish(bodies.get(status, b'{"error": "upstream unavailable"}'))
        raise Finish()

    # --- forwarding -------------------------------------------------------------------------------

    def _upstream_url(self) -> str:
        path = MLFLOW_PREFIX + "/" + self.request.path[len(self.ctx.prefix):]
        return self.ctx.upstream + path + (f"?{self.request.query}" if self.request.query else "")

    def _forwarded_headers(self) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in self.request.headers.get_all():
            if name.lower() not in DROPPED_REQUEST_HEADERS:
                headers.add(name, value)
        headers["X-Forwarded-For"] = self.request.remote_ip or ""
        headers["X-Forwarded-Host"] = self.request.host
        headers["X-Forwarded-Proto"] = self.request.protocol
        upstream_auth = self._account_auth if self._account_auth and not self._as_platform else self.ctx.upstream_auth
        if upstream_auth:
            headers["Authorization"] = upstream_auth
        return headers

    def _start_upstream(self, body: bytes | None = None) -> None:
        """Send the request to MLflow; its body streams from the caller, or is ``body`` when read already."""
        method = self.request.method or "GET"
        has_body = body is None and method in BODY_METHODS and (
            "Content-Length" in self.request.headers or "Transfer-Encoding" in self.request.headers)
        if has_body:
            self._body = asyncio.Queue(maxsize=BODY_QUEUE_CHUNKS)
        request = HTTPRequest(
            self._upstream_url(), method=method, headers=self._forwarded_headers(), body=body,
            body_producer=self._produce_body if has_body else None, allow_nonstandard_methods=True,
            follow_redirects=False, decompress_response=False, header_callback=self._on_header_line,
            streaming_callback=self._on_chunk, connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S)
        self._upstream = asyncio.ensure_future(self.ctx.client.fetch(request, raise_error=False))

    async def _produce_body(self, write: Any) -> None:
        assert self._body is not None  # noqa: S101 - only set as producer when there is a body
        while (chunk := await self._body.get()) is not None:
            await write(chunk)

    def data_received(self, chunk: bytes) -> Any:
        self.bytes_in += len(chunk)
        if self._inspected_body is not None:
            self._inspected_body += chunk
            return None
        if self._body is not None:
            return self._body.put(chunk)  # awaited by tornado: the caller waits while MLflow is slow
        return None

    def _on_header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            _, code, *reason = line.strip().split(" ", 2)
            self._status_line = (int(code), reason[0] if reason else "")
            self._upstream_headers = HTTPHeaders()
        elif line == "\r\n":
            self._apply_headers()
        else:
            self._upstream_headers.parse_line(line)

    def _apply_headers(self) -> None:
        if self._status_line is None or self._status_line[0] < 200:
            return  # an interim (1xx) response: the final one follows
        self.clear()
        self.clear_header("Content-Type")
        self.set_status(*self._status_line)
        for name, value in self._upstream_headers.get_all():
            if name.lower() not in DROPPED_RESPONSE_HEADERS:
                self.add_header(name, value)
        self._headers_applied = True

    def _on_chunk(self, chunk: bytes) -> Any:
        self.bytes_out += len(chunk)
        self.write(chunk)
        return self.flush()  # awaited by tornado's client: MLflow waits while the caller is slow

    def _request_fields(self) -> dict[str, Any]:
        """The inspected request's fields: its JSON body (POST) or its query (DELETE)."""
        if self.request.method != "POST":
            return {k: v[0] for k, v in parse_qs(self.request.query).items()}
        try:
            fields = json.loads(bytes(self._inspected_body or b"") or b"{}")
        except ValueError:
            self._refuse(400, f"{self._inspected} request body is not JSON")
        if not isinstance(fields, dict):
            self._refuse(400, f"{self._inspected} request body is not a JSON object")
        return fields

    def _checked_body(self) -> bytes:
        """The inspected request's body to forward (rewritten for ``runs/create``), or refuse it."""
        fields = self._request_fields()
        body = bytes(self._inspected_body or b"")
        endpoint = self._inspected
        if endpoint == "registered-models/alias":
            self._check_alias_change(fields)
        elif endpoint in ("experiments/create", "experiments/update"):
            name = str(fields.get("name" if endpoint == "experiments/create" else "new_name", ""))
            if reserved_experiment_name(name):
                self._refuse(403, f"experiment name {name!r} is reserved for the platform's pipelines")
            tags = fields.get("tags") or []
            if any(isinstance(t, dict) and str(t.get("key", "")).startswith(RESERVED_TAG_PREFIX) for t in tags):
                self._refuse(403, f"experiment tags {RESERVED_TAG_PREFIX}* are set by the platform only")
        elif endpoint == "experiments/set-experiment-tag":
            if str(fields.get("key", "")).startswith(RESERVED_TAG_PREFIX):
                self._refuse(403, f"experiment tags {RESERVED_TAG_PREFIX}* are set by the platform only")
        elif endpoint == "runs/set-tag":
            if fields.get("key") == USER_TAG:
                self._refuse(403, f"the {USER_TAG} tag names the run's creator and is set by the platform")
        elif endpoint == "runs/create" and self.user_name:
            tags = [t for t in fields.get("tags") or [] if not (isinstance(t, dict) and t.get("key") == USER_TAG)]
            fields["tags"] = [*tags, {"key": USER_TAG, "value": self.user_name}]
            fields["user_id"] = self.user_name
            body = json.dumps(fields).encode()
        return body

    def _check_alias_change(self, fields: dict[str, Any]) -> None:
        """Refuse (403) an alias move the caller may not make.

        A clinical alias (:attr:`ProxyContext.protected_aliases`) moves only by a director's or an
        admin's request, made upstream with the platform account; the audit detail names the
        model, alias and version either way.
        """
        alias, model, version = (str(fields.get(k, "")) for k in ("alias", "name", "version"))
        change = f"alias {alias!r} of model {model!r}" + (f" -> version {version}" if version else " deleted")
        if alias in self.ctx.protected_aliases:
            if not (self.admin or set(self.groups) & set(ALIAS_APPROVERS)):
                self._refuse(403, f"{change}: a clinical alias moves only with a director's or an admin's approval")
            self._as_platform = True
        self.detail = change + (" (approved)" if alias in self.ctx.protected_aliases else "")

    async def _forward(self, *_: str) -> None:
        if self._inspected_body is not None:
            self._start_upstream(self._checked_body())
        if self._body is not None:
            await self._body.put(None)
        assert self._upstream is not None  # noqa: S101 - started in prepare()
        try:
            await self._upstream
        except StreamClosedError:
            self.detail = "caller closed the connection"
            return
        except (OSError, HTTPClientError, asyncio.TimeoutError) as exc:
            if self._headers_applied:
                self.detail = f"MLflow stopped answering: {type(exc).__name__}"
                return
            self._refuse(502, f"MLflow unreachable: {type(exc).__name__}")
        if not self._headers_applied:
            self._refuse(502, "MLflow sent no response")
        self.finish()

    get = head = post = put = patch = delete = options = _forward

    def on_connection_close(self) -> None:
        if self._upstream is not None and not self._upstream.done():
            self._upstream.cancel()
        if self._body is not None and self._body.empty():
            self._body.put_nowait(None)

    # --- audit ------------------------------------------------------------------------------------

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, Finish):
            return
        log.error("request %s failed: %s", self.request_id, type(value).__name__, exc_info=(typ, value, tb))

    def on_finish(self) -> None:
        status = self.get_status()
        route = self.request.path[len(self.ctx.prefix):]
        if route.startswith("static-files/") and status < 400:
            return
        outcome = Outcome.ERROR if status >= 500 else Outcome.ALLOWED if status < 400 else Outcome.DENIED
        log.log(logging.INFO if status < 400 else logging.WARNING, "%s %s %s %d %.1f ms %d B in %d B out %s",
                self.user_name or "-", self.request.method, route, status, 1000 * (time.perf_counter() - self._started),
                self.bytes_in, self.bytes_out, self.request_id)
        if self.ctx.audit is None:
            return
        detail = f"{self.request.method} {route}" + (f": {self.detail}" if self.detail else "")
        record = AuditRecord(user=self.user_name, groups=self.groups, action="mlflow", outcome=outcome, status=status,
                             request_id=self.request_id, detail=detail)
        self.ctx.audit_executor.submit(self.ctx.audit.append, record).add_done_callback(_report_audit_failure)


class OAuthCallbackHandler(HubOAuthCallbackHandler):  # type: ignore[misc]
    """``{prefix}oauth_callback``: finishes the hub's OAuth sign-in with the proxy's own client."""

    def initialize(self, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


def _report_audit_failure(future: Any) -> None:
    if future.exception() is not None:
        log.error("an audit record could not be written: %s", type(future.exception()).__name__)


def build_context(settings: Settings, *, audit: bool = True) -> ProxyContext:
    """The proxy's context from the settings and JupyterHub's environment for a managed service
    (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_PREFIX``, OAuth client)."""
    hub_auth = HubOAuth(cache_max_age=60)
    if not hub_auth.access_scopes:
        hub_auth.access_scopes = {MLFLOW_ACCESS}
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", MLFLOW_PREFIX + "/")
    client = AsyncHTTPClient(force_instance=True, max_clients=MAX_UPSTREAM_REQUESTS,
                             max_body_size=MAX_DOWNLOAD_BYTES)
    from medimg_hub.access.datasets import DatasetDirectory
    from medimg_hub.db import make_engine

    engine = make_engine(settings.database_url)
    audit_log = AuditLog(engine) if audit else None
    username, password = credentials(settings)
    upstream = f"http://127.0.0.1:{settings.mlflow.port}"
    accounts = MlflowAccounts(AdminApi(upstream + MLFLOW_PREFIX, (username, password)), account_key(settings),
                              DatasetDirectory(engine))
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    return ProxyContext(upstream=upstream, accounts=accounts,
                        prefix=prefix if prefix.endswith("/") else prefix + "/", hub_auth=hub_auth,
                        identities=HubIdentities(hub_auth), client=client, audit=audit_log,
                        upstream_auth=f"Basic {basic}", protected_aliases=frozenset({settings.mlflow.model_alias}))


def make_app(context: ProxyContext) -> Application:
    """The tornado application: the OAuth callback, and everything else forwarded."""
    prefix = context.prefix
    handlers = [
        (prefix.rstrip("/"), RedirectHandler, {"url": prefix}),
        (prefix + "oauth_callback", OAuthCallbackHandler, {"hub_auth": context.hub_auth}),
        (prefix + "(.*)", MlflowProxyHandler, {"context": context}),
    ]
    # cookie_secret signs the OAuth state and session cookies; a restart signs people in again
    return Application(handlers, cookie_secret=os.urandom(32), xsrf_cookies=False, log_function=lambda _: None)


async def serve(config: str | None) -> None:
    """Listen on ``JUPYTERHUB_SERVICE_URL`` (else ``[hub] mlflow_proxy_port``) until SIGTERM/SIGINT."""
    settings = load_settings(config)
    context = build_context(settings)
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))
    host, port = url.hostname or "127.0.0.1", url.port or settings.hub.mlflow_proxy_port
    server = make_app(context).listen(port, address=host, xheaders=False)
    log.info("MLflow proxy listening on %s:%d, %s -> %s", host, port, context.prefix, context.upstream)
    await stop_requested()
    server.stop()
    context.audit_executor.shutdown(wait=True)
    log.info("MLflow proxy stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service("python -m medimg_hub.tracking.proxy", __doc__.split("\n")[0], serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
