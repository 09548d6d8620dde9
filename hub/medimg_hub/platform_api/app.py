"""Build the platform API's tornado application from the settings and JupyterHub's environment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import requests
from jupyterhub.services.auth import HubAuth, HubOAuth
from tornado.web import Application

from medimg_kernel.dicom_json import first_value

from medimg_hub.access.audit import AuditLog
from medimg_hub.access.datasets import DatasetDirectory, seed_datasets
from medimg_hub.access.identities import HubIdentities
from medimg_hub.db import make_engine
from medimg_hub.datasets import api as datasets_api
from medimg_hub.datasets import page as datasets_page
from medimg_hub.datasets.operations import DatasetOperations
from medimg_hub.db.migrations import upgrade
from medimg_hub.delivery import api as delivery_api
from medimg_hub.delivery.outbox import Outbox
from medimg_hub.pacs.connection import PacsConnection, pacs_connection
from medimg_hub.pipeline import api as pipeline_api
from medimg_hub.pipeline.access import TaskAccess
from medimg_hub.pipeline.service import TaskService
from medimg_hub.pipeline.store import TaskStore
from medimg_hub.platform_api import admin
from medimg_hub.platform_api.base import HealthHandler, PlatformContext
from medimg_hub.platform_api.gateway import handlers as gateway
from medimg_hub.platform_api.gateway.paths import BadRequest, check_uid
from medimg_hub.platform_api.gateway.upstream import Orthanc
from medimg_hub.platform_api.metrics import PlatformMetrics
from medimg_hub.review import api as review_api
from medimg_hub.review.access import ReviewAccess
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

#: Threads for blocking calls (Orthanc requests, database): one streaming WADO-RS response holds one.
WORKER_THREADS = 32
DEFAULT_PREFIX = "/services/platform/"


def build_context(settings: Settings, env: Mapping[str, str], *, migrate: bool = True) -> PlatformContext:
    """Connect everything the handlers need.

    Parameters
    ----------
    settings
        Platform settings (database, PACS, datasets).
    env
        JupyterHub's environment for a managed service: ``JUPYTERHUB_API_TOKEN``,
        ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_SERVICE_NAME``.
    migrate
        Bring the platform database to the newest schema first (idempotent).
    """
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    seed_datasets(engine, settings.datasets)
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", DEFAULT_PREFIX)
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    name = env.get("JUPYTERHUB_SERVICE_NAME", "platform")
    hub_auth = HubAuth(api_token=env.get("JUPYTERHUB_API_TOKEN", ""),
                       api_url=env.get("JUPYTERHUB_API_URL", f"http://127.0.0.1:{settings.hub.api_port}/hub/api"),
                       access_scopes={f"access:services!service={name}"}, cache_max_age=60)
    pacs = pacs_connection(settings)
    executor = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="platform-api")
    directory = DatasetDirectory(engine)
    service = TaskService(settings, TaskStore(settings.database_url))
    return PlatformContext(
        settings=settings, prefix=prefix, identities=HubIdentities(hub_auth), directory=directory,
        audit=AuditLog(engine), metrics=PlatformMetrics(),
        orthanc=Orthanc(pacs, executor),
        tasks=TaskAccess(service, directory, engine, _series_lookup(pacs)),
        review=ReviewAccess(service, directory, engine, settings.review), executor=executor,
        page_auth=_page_auth(env, hub_auth, prefix),
        datasets=DatasetOperations(settings, engine, group_exists=_hub_group_lookup(hub_auth),
                                   on_change=directory.forget),
        deliveries=Outbox(engine),
    )


def _page_auth(env: Mapping[str, str], hub_auth: HubAuth, prefix: str) -> HubOAuth:
    """The hub's OAuth client of this service (JupyterHub's environment for a managed service)."""
    return HubOAuth(api_token=hub_auth.api_token, api_url=hub_auth.api_url, base_url=prefix,
                    oauth_client_id=env.get("JUPYTERHUB_CLIENT_ID", "service-platform"),
                    oauth_redirect_uri=env.get("JUPYTERHUB_OAUTH_CALLBACK_URL", prefix + "oauth_callback"),
                    hub_prefix=env.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/",
                    access_scopes=set(hub_auth.access_scopes), cache_max_age=60)


def _hub_group_lookup(hub_auth: HubAuth) -> Callable[[str], bool]:
    """Whether the hub has a group, asked of its REST API with the service's token (``read:groups:name``)."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {hub_auth.api_token}"

    def group_exists(name: str) -> bool:
        from urllib.parse import quote

        try:
            answer = session.get(f"{hub_auth.api_url}/groups/{quote(name, safe='')}", timeout=10)
        except requests.RequestException as exc:
            from medimg_hub.datasets.administration import DatasetAdminError

            raise DatasetAdminError(f"the hub did not answer whether group {name!r} exists: {type(exc).__name__}") from exc
        return answer.status_code == 200

    return group_exists


def _series_lookup(pacs: PacsConnection) -> Callable[[str], str | None]:
    """StudyInstanceUID of a series, asked of Orthanc (``None``: no such series, or a malformed UID)."""
    session = pacs.session()

    def study_of_series(series_uid: str) -> str | None:
        try:
            check_uid(series_uid, "SeriesInstanceUID")
            found = session.get(f"{pacs.dicomweb_url}/series", timeout=(5, 30), params={
                "SeriesInstanceUID": series_uid, "includefield": "0020000D", "limit": "2"}).json()
        except (BadRequest, requests.RequestException, ValueError):
            return None
        studies = {first_value(item, "0020000D") for item in found}
        return studies.pop() if len(studies) == 1 else None

    return study_of_series


def make_app(context: PlatformContext) -> Application:
    """The tornado application: every module's ``default_handlers`` under the service prefix."""
    routes = [(r"health/?", HealthHandler)]
    for module in (gateway, pipeline_api, review_api, admin, datasets_api, delivery_api):
        routes += module.default_handlers
    handlers = [(context.prefix + pattern, handler, {"context": context}) for pattern, handler in routes]
    handlers += datasets_page.handlers(context)
    return Application(handlers, xsrf_cookies=False, log_function=_log_request,
                       cookie_secret=datasets_page.cookie_secret())


def _log_request(handler: object) -> None:
    """Access log without URIs (they hold UIDs): method, route, status, time, request id."""
    status = handler.get_status()  # type: ignore[attr-defined]
    request = handler.request  # type: ignore[attr-defined]
    level = logging.INFO if status < 400 else logging.WARNING
    log.log(level, "%s %s %d %.1f ms %s", request.method, getattr(handler, "route", "?"), status,
            1000 * request.request_time(), getattr(handler, "request_id", "-"))
