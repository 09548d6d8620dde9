"""Demo hub logins, one per role, created in NativeAuthenticator's user store (approved).

Memberships let an attack matrix test "own and other dataset" against the demo datasets
(``site-a``, ``site-b``, ``site-c``): engineer1 reads site-a and site-b through ``engineers``;
resident-a and attending-a belong to site-a (attending-a may finalise there); resident-c only to
site-c; director1 and admin to no dataset.

Generated passwords are kept in ``var/secrets/demo-users.json`` (mode 0600) and printed once, when
created. Idempotent: existing accounts keep their passwords and get their groups back. Writes the
hub database directly, so run it before the hub starts (``medimg up`` does) or restart the hub.

``python -m medimg_hub.demo.users [--config FILE]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo

from medimg_hub.hubconf.roles import ADMINS, ATTENDINGS, DIRECTORS, ENGINEERS, RESIDENTS
from medimg_hub.hubconf.state import HubState
from medimg_hub.secrets import write_private
from medimg_hub.settings import CONFIG_ENV_VAR, Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoUser:
    """One demo login: its hub name, groups, and whether it is a hub admin."""

    name: str
    groups: tuple[str, ...]
    admin: bool = False


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("engineer1", (ENGINEERS,)),
    DemoUser("resident-a", (RESIDENTS, "site-a")),
    DemoUser("attending-a", (ATTENDINGS, "site-a", "site-a-attendings")),
    DemoUser("resident-c", (RESIDENTS, "site-c")),
    DemoUser("director1", (DIRECTORS,)),
    DemoUser("admin", (ADMINS,), admin=True),
)


def passwords_file(settings: Settings) -> Path:
    """``var/secrets/demo-users.json``."""
    return settings.var_dir / "secrets" / "demo-users.json"


def ensure_demo_users(settings: Settings, users: Sequence[DemoUser] = DEMO_USERS) -> dict[str, str]:
    """Create (or repair) the demo logins in the hub database.

    Returns
    -------
    dict
        Name → password of the accounts created by this call (empty when all existed).
    """
    path = passwords_file(settings)
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    created: dict[str, str] = {}
    session = orm.new_session_factory(HubState.for_settings(settings).db_url)()
    try:
        for user in users:
            password = stored.get(user.name) or secrets.token_urlsafe(12)
            info = UserInfo.find(session, user.name)
            if info is None:
                session.add(UserInfo(username=user.name, is_authorized=True,
                                     password=bcrypt.hashpw(password.encode(), bcrypt.gensalt())))
                created[user.name] = password
            else:
                info.is_authorized = True
            stored[user.name] = password
            _ensure_hub_user(session, user)
        session.commit()
    finally:
        session.close()
    write_private(path, json.dumps(stored, indent=2))
    for name in created:
        log.info("created demo login %s", name)
    return created


def _ensure_hub_user(session: orm.Session, user: DemoUser) -> None:
    orm_user = orm.User.find(session, user.name)
    if orm_user is None:
        orm_user = orm.User(name=user.name)
        session.add(orm_user)
    if user.admin:
        orm_user.admin = True
    for group_name in user.groups:
        group = orm.Group.find(session, group_name)
        if group is None:
            group = orm.Group(name=group_name)
            session.add(group)
        if group not in orm_user.groups:
            orm_user.groups.append(group)


def main(argv: Sequence[str] | None = None) -> None:
    """Create the demo logins; print the passwords of those created now."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get(CONFIG_ENV_VAR))
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    created = ensure_demo_users(settings)
    for name, password in created.items():
        print(f"{name:12s} {password}")  # noqa: T201 - shown once, on purpose
    print(f"Demo logins: {len(DEMO_USERS)} ({len(created)} new); passwords in {passwords_file(settings)}")  # noqa: T201


if __name__ == "__main__":
    main()
