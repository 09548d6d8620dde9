"""``medimg users``: what an admin does for a hub account from the command line."""

from __future__ import annotations

import click

from medimg_hub.hubconf.throttle import LoginThrottle, throttle_file
from medimg_hub.settings import Settings


@click.group()
def users() -> None:
    """Hub accounts (the hub's own user management is its admin page)."""


@users.command()
@click.argument("name")
@click.pass_obj
def unlock(settings: Settings, name: str) -> None:
    """Clear NAME's failed-login counters: every client may try again at once (takes effect without a restart)."""
    path = throttle_file(settings)
    if not path.exists():
        click.echo(f"no login counters yet ({path} does not exist): nothing to unlock")
        return
    removed = LoginThrottle(path).unlock(name)
    click.echo(f"{name}: {removed} counter(s) cleared" if removed else f"{name}: no failed logins recorded")
