"""The admins' datasets page: ``{prefix}admin/datasets`` of the platform service, behind the hub's login.

A server-rendered page (no script): the datasets with their studies, grants and saved rules, the
studies in no dataset, and a form for each change; each form posts back to the page, which makes
the change through :class:`~medimg_hub.datasets.operations.DatasetOperations` (the same code as
the API and the CLI, audited) and redirects to the page with the outcome in a signed, one-time
cookie (never in the URL: outcomes may name studies, and URLs reach request logs).

Sign-in is the hub's OAuth (cookie ``jupyterhub-services-platform``); only hub admins see the page
(others get 403). A form post must come from the page's own origin (Fetch Metadata or ``Origin``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado.template import Loader
from tornado.web import HTTPError, RequestHandler, authenticated

from medimg_hub.access.models import Right
from medimg_hub.access.origin import same_origin
from medimg_hub.datasets.administration import DatasetAdminError, PacsUnanswered, qido_text

log = logging.getLogger(__name__)

#: The page's path below the service prefix.
PAGE = "admin/datasets"
#: Cookie carrying the last change's outcome to the next page load.
FLASH_COOKIE = "medimg-datasets-flash"
_TEMPLATES = Loader(str(Path(__file__).with_name("templates")), autoescape="xhtml_escape")


def cookie_secret() -> bytes:
    """Signs the OAuth state and the outcome cookie; new at each start (a restart signs admins in again)."""
    return os.urandom(32)


def _query(text: str) -> dict[str, str]:
    """``Attr=value&Attr2=value`` (or one per line) as filters; :class:`DatasetAdminError` if malformed."""
    filters: dict[str, str] = {}
    for part in text.replace("\n", "&").split("&"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise DatasetAdminError(f"{part.strip()!r} is not ATTRIBUTE=VALUE (e.g. StudyDescription=LIVER*)")
        filters[key.strip()] = value.strip()
    return filters


class DatasetsPage(HubOAuthenticated, RequestHandler):  # type: ignore[misc]
    """GET: the page. POST: one change (``op`` and its fields), then back to the page."""

    def initialize(self, context: Any) -> None:
        self.ctx = context
        self.hub_auth = context.page_auth

    def _admin(self) -> dict[str, Any]:
        user = self.current_user
        if not user.get("admin"):
            raise HTTPError(403, "datasets are administered by hub admins")
        return user

    @authenticated
    async def get(self) -> None:
        self._admin()
        flash = self.get_signed_cookie(FLASH_COOKIE, max_age_days=1)
        self.clear_cookie(FLASH_COOKIE)
        outcome = json.loads(flash) if flash else None
        views = await self.ctx.run(self.ctx.datasets.admin.list)
        try:
            unassigned = await self.ctx.run(self.ctx.datasets.unassigned)
            pacs_error = None
        except PacsUnanswered as exc:
            unassigned, pacs_error = [], str(exc)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                                   "frame-ancestors 'self'")
        self.finish(_TEMPLATES.load("datasets.html").generate(
            datasets=views, unassigned=unassigned, pacs_error=pacs_error, outcome=outcome,
            rights=[r.value for r in Right], user=self.current_user["name"], qido_text=qido_text,
            hub_home=self.hub_auth.hub_prefix + "home", logout=self.hub_auth.hub_prefix + "logout"))

    @authenticated
    async def post(self) -> None:
        user = self._admin()
        if not same_origin(self.request.headers, self.request.host):
            raise HTTPError(403, "changes come from the datasets page itself")
        op = self.get_body_argument("op", "")
        dataset = self.get_body_argument("dataset", "")
        try:
            message = await self.ctx.run(lambda: self._change(op, dataset, user))
            outcome = {"ok": True, "message": message}
        except DatasetAdminError as exc:
            outcome = {"ok": False, "message": str(exc)}
        self.set_signed_cookie(FLASH_COOKIE, json.dumps(outcome), expires_days=None, httponly=True, samesite="Strict",
                               path=self.request.path)
        self.redirect(self.request.path, status=303)

    def check_xsrf_cookie(self) -> None:
        """Form posts are checked by origin in :meth:`post` (the app has no xsrf cookies)."""

    def _change(self, op: str, dataset: str, user: dict[str, Any]) -> str:
        ops = self.ctx.datasets
        who = {"actor": user["name"], "groups": tuple(user.get("groups", ()))}
        arg = self.get_body_argument
        if op == "create":
            view = ops.admin.create(arg("name", ""), description=arg("description", ""),
                                    institution=arg("institution", ""), **who)
            return f"Dataset {view.name} created. Add studies or a rule, then grant it to groups."
        if op == "rename":
            answer = ops.update(dataset, new_name=arg("name", "").strip() or None,
                                description=arg("description", None), **who)
            return f"Dataset {answer['name']} saved." + (f" MLflow: {answer['mlflow']}." if "mlflow" in answer else "")
        if op == "grant":
            added = ops.grant(dataset, arg("group", "").strip(), arg("right", ""), **who)
            return f"Granted {arg('right', '')} on {dataset} to {arg('group', '').strip()}." if added else \
                "That group had that right already."
        if op == "revoke":
            removed = ops.admin.revoke(dataset, arg("group", ""), arg("right", ""), **who)
            return f"Revoked {arg('right', '')} on {dataset} from {arg('group', '')}." if removed else "Nothing to revoke."
        if op == "add-rule":
            rule_id, placed = ops.add_rule(dataset, _query(arg("query", "")), **who)
            return (f"Rule {rule_id} saved: {len(placed.added)} studies added, {len(placed.moved)} moved here from other "
                    f"datasets, {len(placed.already)} were here already.")
        if op == "remove-rule":
            try:
                rule_id = int(arg("rule", ""))
            except ValueError:
                raise DatasetAdminError("no rule chosen") from None
            ops.admin.remove_rule(rule_id, **who)
            return f"Rule {rule_id} removed (the studies it brought stay)."
        if op == "add-studies":
            uids = self.get_body_arguments("study") + arg("studies", "").split()
            placed = ops.admin.add_studies(dataset, uids, **who)
            return f"{len(placed.added)} studies added, {len(placed.moved)} moved here, {len(placed.already)} were here."
        if op == "remove-studies":
            removed = ops.admin.remove_studies(dataset, arg("studies", "").split(), **who)
            return f"{removed} studies removed from {dataset} (now in no dataset)."
        raise DatasetAdminError(f"unknown change {op!r}")


class OAuthCallback(HubOAuthCallbackHandler):  # type: ignore[misc]
    """``{prefix}oauth_callback``: finishes the hub's OAuth sign-in for the page."""

    def initialize(self, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


def handlers(context: Any) -> list[tuple[str, type[RequestHandler], dict[str, Any]]]:
    """The page and the OAuth callback under the service prefix."""
    return [(context.prefix + PAGE, DatasetsPage, {"context": context}),
            (context.prefix + "oauth_callback", OAuthCallback, {"hub_auth": context.page_auth})]


__all__ = ["FLASH_COOKIE", "PAGE", "cookie_secret", "handlers"]
