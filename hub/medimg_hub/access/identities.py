"""Who is calling: the caller's JupyterHub token, checked with the hub, and their groups.

A request carries ``Authorization: token <JUPYTERHUB_API_TOKEN>`` (or ``Bearer``). The hub
says whose token it is (``GET /hub/api/user`` with that token, through
:class:`jupyterhub.services.auth.HubAuth`, cached ``cache_max_age`` seconds) and which scopes
it holds; the token must hold the service's access scope
(``access:services!service=platform``). The user's groups and admin flag are then read with the
service's own token (``GET /hub/api/users/<name>``; scopes ``read:users:name`` and
``read:users:groups``), because a kernel's token need not be allowed to read them.

Tokens are never logged. Browser (OAuth cookie) sign-in is not offered: kernels and
dashboards send their token.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from jupyterhub.services.auth import HubAuth
from tornado.httputil import HTTPHeaders

log = logging.getLogger(__name__)

_AUTH_HEADER = re.compile(r"(?:token|bearer)\s+([^\s]+)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    Attributes
    ----------
    name
        Hub user (or service) name.
    kind
        ``"user"`` or ``"service"``.
    groups
        Hub groups of a user (empty for a service).
    admin
        The hub's admin flag.
    scopes
        The scopes of the token used for this request.
    """

    name: str
    kind: str
    groups: tuple[str, ...]
    admin: bool
    scopes: frozenset[str]


class AuthFailure(Exception):
    """The request is not authenticated (``status`` 401) or its token lacks access (403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def token_from_headers(headers: HTTPHeaders) -> str | None:
    """The token of an ``Authorization: token|Bearer ...`` header (``None`` if absent or malformed)."""
    match = _AUTH_HEADER.fullmatch(headers.get("Authorization", ""))
    return match.group(1) if match else None


class HubIdentities:
    """Resolve request tokens to :class:`Identity` through the hub, with a short cache of groups.

    Parameters
    ----------
    hub_auth
        A :class:`HubAuth` with the service's token and the hub API URL (both from
        JupyterHub's environment for a managed service).
    groups_ttl_s
        Seconds a user's groups and admin flag are cached; a removal from a group takes
        effect after at most this long (and token revocation after ``hub_auth.cache_max_age``).
    """

    def __init__(self, hub_auth: HubAuth, groups_ttl_s: float = 30.0) -> None:
        self.hub_auth = hub_auth
        self._groups_ttl_s = groups_ttl_s
        self._groups: dict[str, tuple[float, tuple[str, ...], bool]] = {}

    async def identify(self, headers: HTTPHeaders) -> Identity:
        """The caller of a request.

        Raises
        ------
        AuthFailure
            401: no token, or a token the hub does not know; 403: a valid token without the
            service's access scope.
        """
        token = token_from_headers(headers)
        if not token:
            raise AuthFailure(401, "missing token")
        model = await self.hub_auth.user_for_token(token, sync=False)
        if not model or "name" not in model:
            raise AuthFailure(401, "invalid token")
        scopes = frozenset(model.get("scopes", ()))
        if self.hub_auth.access_scopes and not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            raise AuthFailure(403, "token lacks the service access scope")
        kind = str(model.get("kind", "user"))
        if kind != "user":
            return Identity(str(model["name"]), kind, (), False, scopes)
        groups, admin = await self.groups_of(str(model["name"]))
        return Identity(str(model["name"]), kind, groups, admin, scopes)

    async def groups_of(self, name: str) -> tuple[tuple[str, ...], bool]:
        """A user's hub groups (sorted) and admin flag, asked with the service's own token.

        Raises
        ------
        AuthFailure
            401 if the hub does not know the user.
        """
        hit = self._groups.get(name)
        if hit and time.monotonic() - hit[0] < self._groups_ttl_s:
            return hit[1], hit[2]
        url = f"{self.hub_auth.api_url.rstrip('/')}/users/{quote(name, safe='')}"
        model = await self.hub_auth._api_request("GET", url)  # the service's own token  # noqa: SLF001
        if not model:
            raise AuthFailure(401, "unknown user")
        groups = tuple(sorted(str(g) for g in model.get("groups", ())))
        admin = bool(model.get("admin", False))
        self._groups[name] = (time.monotonic(), groups, admin)
        return groups, admin
