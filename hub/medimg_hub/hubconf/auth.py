"""Authenticator choice: NativeAuthenticator (embedded default), OIDC or LDAP.

Each ``*_config`` function returns the authenticator class and the trait values to set on it,
so the config file applies them and the tests check them without a network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bcrypt
from ldapauthenticator import LDAPAuthenticator
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator import handlers as native_handlers
from tornado.escape import url_escape
from tornado.httputil import url_concat
from traitlets import Dict as DictTrait
from traitlets import Unicode

from medimg_kernel.errors import ConfigurationError

from medimg_hub.hubconf.throttle import LoginThrottle, client_key, throttle_file
from medimg_hub.settings import HubSettings, Settings

log = logging.getLogger(__name__)

#: Minimum length of passwords chosen at sign-up or change (NativeAuthenticator).
MIN_PASSWORD_LENGTH = 10
#: Cookie a successful login leaves in the browser (signed, the user name): that browser is then
#: throttled on its own, apart from strangers guessing the same account's password.
DEVICE_COOKIE = "medimg-login-device"
DEVICE_COOKIE_DAYS = 90


class NativeLoginHandler(native_handlers.LoginHandler):
    """NativeAuthenticator 1.3.0's login page, working with JupyterHub 6.

    1.3.0 times logins with ``self.statsd``, which JupyterHub 6 removed (every POST /hub/login
    fails with 500), and its ``_render`` refuses the ``sync`` argument JupyterHub's error page passes.
    """

    def _render(self, login_error: str | None = None, username: str | None = None, **kwargs: Any) -> Any:
        sync = bool(kwargs.get("sync", False))
        return self.render_template(
            "native-login.html", sync=sync,
            next=url_escape(self.get_argument("next", default="")), username=username,
            login_error=login_error, custom_html=self.authenticator.custom_html,
            login_url=self.settings["login_url"], enable_signup=self.authenticator.enable_signup,
            two_factor_auth=self.authenticator.allow_2fa,
            authenticator_login_url=url_concat(self.authenticator.login_url(self.hub.base_url),
                                               {"next": self.get_argument("next", "")}),
        )

    async def post(self) -> None:
        data = {arg: self.get_argument(arg, strip=False) for arg in self.request.arguments}
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            # this browser is now known for this account: strangers' failures no longer slow it down
            self.set_secure_cookie(DEVICE_COOKIE, user.name, expires_days=DEVICE_COOKIE_DAYS, httponly=True,
                                   path=self.hub.base_url, samesite="Strict")
            self.redirect(self.get_next_url(user))
            return
        wait = getattr(self, "login_wait_s", None)
        if wait is not None:
            error = f"Too many failed attempts from this browser or network: try again in {int(wait) + 1} seconds."
        else:
            error = "Invalid username or password."
        info = self.authenticator.get_user(data.get("username", ""))
        if wait is None and info is not None and not info.is_authorized and info.is_valid_password(
                data.get("password", "")):
            error = f"User {info.username} has not been authorized by an administrator yet."
        self.finish(await self._render(login_error=error, username=data.get("username", "")))


class MedimgNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator with the JupyterHub 6 compatible login handler and login throttling per
    (account, client) that a stranger cannot turn into a lockout of the user (:mod:`.throttle`).

    Every refusal costs the same time whether or not the account exists: unknown names are
    checked against a dummy bcrypt hash of the same cost as real ones.
    """

    login_attempts_file = Unicode(
        "", help="SQLite file of the failed-login counters (empty: in memory only, lost on restart).",
    ).tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.throttle = LoginThrottle(Path(self.login_attempts_file) if self.login_attempts_file else None,
                                      free_attempts=self.allowed_failed_logins or 5,
                                      max_delay_s=float(self.seconds_before_next_try or 300))
        self._dummy_hash = bcrypt.hashpw(b"not a password", bcrypt.gensalt())

    def _client(self, handler: Any, username: str) -> str:
        device = handler.get_secure_cookie(DEVICE_COOKIE, max_age_days=DEVICE_COOKIE_DAYS) if handler else None
        return client_key(device_trusted=device == username.encode(),
                          address=handler.request.remote_ip if handler else None)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
        username = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        client = self._client(handler, username)
        wait = self.throttle.check(username, client)
        if wait is not None:
            if handler is not None:
                handler.login_wait_s = wait.seconds
            return None
        user = self.get_user(username)
        if user is None:
            bcrypt.checkpw(password.encode(), self._dummy_hash)  # the same cost as a real check
            self.throttle.failed(username, client)
            return None
        valid = [user.is_valid_password(password), user.is_authorized]
        if user.has_2fa:
            valid.append(user.is_valid_token(data.get("2fa")))
        if all(valid):
            self.throttle.succeeded(username, client)
            return username
        self.throttle.failed(username, client)
        return None

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        return [(path, NativeLoginHandler if path == r"/login" else handler)
                for path, handler in super().get_handlers(app)]


class GroupMappingLDAPAuthenticator(LDAPAuthenticator):
    """LDAPAuthenticator that turns the user's LDAP groups into hub groups at each login.

    LDAPAuthenticator 2.0 records the ``allowed_groups`` the user belongs to in
    ``auth_state["ldap_groups"]``; with ``manage_groups`` the ``groups`` of the returned model
    replace the user's hub groups.
    """

    group_map = DictTrait(help="LDAP group DN -> hub group name.").tag(config=True)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        model = await super().authenticate(handler, data)
        if model is None:
            return None
        ldap_groups = (model.get("auth_state") or {}).get("ldap_groups", [])
        model["groups"] = sorted({self.group_map[dn] for dn in ldap_groups if dn in self.group_map})
        return model


def native_config(hub: HubSettings, attempts_file: Path | None = None) -> tuple[str, dict[str, Any]]:
    """NativeAuthenticator: bcrypt-hashed passwords in the hub database, login throttling per
    (account, client) with growing delays (counters in ``attempts_file``, kept across restarts),
    admin approval."""
    return "medimg_hub.hubconf.auth.MedimgNativeAuthenticator", {
        "login_attempts_file": str(attempts_file) if attempts_file else "",
        "enable_signup": hub.signup,
        "open_signup": False,  # sign-ups wait for an admin at /hub/authorize
        "allowed_failed_logins": hub.lockout_attempts,
        "seconds_before_next_try": int(hub.lockout_s),
        "minimum_password_length": MIN_PASSWORD_LENGTH,
        "check_common_password": True,
        "ask_email_on_signup": False,
        # Only approved accounts can log in at all; the hub needs no further allow list.
        "allow_all": True,
    }


def oidc_config(settings: Settings) -> tuple[str, dict[str, Any]]:
    """GenericOAuthenticator against an OpenID Connect provider; its groups claim → hub groups."""
    hub = settings.hub
    missing = [k for k in ("oidc_authorize_url", "oidc_token_url", "oidc_userdata_url", "oidc_client_id")
               if not getattr(hub, k)]
    if missing:
        raise ConfigurationError(f"[hub] authenticator = 'oidc' needs {missing} in the settings file")
    secret_file = (settings.resolve(Path(hub.oidc_client_secret_file)) if hub.oidc_client_secret_file
                   else settings.var_dir / "secrets" / "oidc-client-secret")
    if not secret_file.exists():
        raise ConfigurationError(f"[hub] oidc_client_secret_file {secret_file} does not exist; write the "
                                 "client secret there (mode 0600)")
    return "oauthenticator.generic.GenericOAuthenticator", {
        "authorize_url": hub.oidc_authorize_url,
        "token_url": hub.oidc_token_url,
        "userdata_url": hub.oidc_userdata_url,
        "client_id": hub.oidc_client_id,
        "client_secret": secret_file.read_text().strip(),
        "oauth_callback_url": f"http://127.0.0.1:{hub.port}/hub/oauth_callback",
        "scope": ["openid", "profile", "email", hub.oidc_groups_claim],
        "username_claim": hub.oidc_username_claim,
        "manage_groups": True,
        "auth_state_groups_key": f"oauth_user.{hub.oidc_groups_claim}",
        "allow_all": True,
        "login_service": "hospital sign-in",
    }


def ldap_config(hub: HubSettings) -> tuple[str, dict[str, Any]]:
    """LDAPAuthenticator over TLS; ``ldap_group_map`` pairs DN=hub group decide the hub groups."""
    if not hub.ldap_server or not hub.ldap_bind_dn_templates:
        raise ConfigurationError("[hub] authenticator = 'ldap' needs ldap_server and ldap_bind_dn_templates")
    group_map = {}
    for pair in hub.ldap_group_map:
        dn, sep, group = pair.rpartition("=")
        if not sep or not dn or not group:
            raise ConfigurationError(f"[hub] ldap_group_map entry {pair!r} must read 'LDAP group DN=hub group'")
        group_map[dn] = group
    return "medimg_hub.hubconf.auth.GroupMappingLDAPAuthenticator", {
        "server_address": hub.ldap_server,
        "server_port": hub.ldap_port,
        "bind_dn_template": list(hub.ldap_bind_dn_templates),
        "allowed_groups": list(group_map),
        "group_map": group_map,
        "manage_groups": True,
        "allow_all": not group_map,
    }


def authenticator_config(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The authenticator class (import string) and its trait values for ``[hub] authenticator``."""
    kind = settings.hub.authenticator
    if kind == "oidc":
        return oidc_config(settings)
    if kind == "ldap":
        return ldap_config(settings.hub)
    return native_config(settings.hub, throttle_file(settings))
