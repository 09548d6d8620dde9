"""OS accounts for users' servers, and the file modes that keep kernels out of the hub's state.

With spawner "system-users" every hub user's server runs as their own OS account
(``<prefix><hub name>``, a ``useradd --system`` account with a 0700 home), so a kernel runs
with no right to the platform's state: :func:`secure_state_dir` makes ``var/`` (PACS storage,
databases, secrets, logs) readable by root only. Hub side only: needs root.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from medimg_kernel.errors import ConfigurationError, MedImgError

log = logging.getLogger(__name__)

#: Portable Linux user names (useradd's default NAME_REGEX), at most 32 characters.
_OS_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class OsAccountError(MedImgError, RuntimeError):
    """An OS account for a user's server could not be created or used."""


def os_username(hub_name: str, prefix: str) -> str:
    """The OS account of hub user ``hub_name``.

    Raises
    ------
    OsAccountError
        If the result is not a valid Linux user name (rename the hub user, or shorten the prefix).
    """
    name = f"{prefix}{hub_name}"
    if not _OS_NAME.match(name):
        raise OsAccountError(
            f"hub user {hub_name!r} maps to OS account {name!r}, which is not a valid Linux user name "
            "(lowercase letters, digits, '-' and '_', at most 32 characters); rename the user or "
            "shorten [hub] os_user_prefix"
        )
    return name


def ensure_os_user(name: str, homes_dir: Path) -> pwd.struct_passwd:
    """Create the system account ``name`` with a private home under ``homes_dir`` unless it exists.

    The home is ``homes_dir/name``, owned by the account, mode 0700; an existing account's home
    is re-secured. ``homes_dir`` itself must be traversable by the account (0711 or 0755).
    """
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise OsAccountError(f"creating OS account {name!r} needs root; run the hub as root or "
                                 "create the account beforehand") from None
        homes_dir.mkdir(parents=True, exist_ok=True)
        home = homes_dir / name
        cmd = ["useradd", "--system", "--user-group", "--create-home", "--home-dir", str(home),
               "--shell", "/bin/bash", "--comment", "medimg user server", name]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            raise OsAccountError(f"useradd {name} failed (rc {proc.returncode}): {proc.stderr.strip()}")
        log.info("created OS account %s with home %s", name, home)
        account = pwd.getpwnam(name)
    home = Path(account.pw_dir)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, account.pw_uid, account.pw_gid)
    os.chmod(home, 0o700)
    return account


def delete_os_user(name: str) -> None:
    """Remove the account ``name`` and its home (tests and off-boarding)."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, check=False)  # noqa: S603,S607
    subprocess.run(["userdel", name], capture_output=True, check=False)  # noqa: S603,S607
    shutil.rmtree(account.pw_dir, ignore_errors=True)


def secure_state_dir(var_dir: Path, *, homes_dir: Path | None = None) -> None:
    """Make the platform's state folder readable by root only.

    ``var_dir`` becomes 0700, which closes every path below it (PACS storage, the platform and hub
    databases, ``secrets/``, logs) to users' servers whatever the modes of the files inside.

    Raises
    ------
    ConfigurationError
        If ``homes_dir`` lies inside ``var_dir`` (users could not reach their homes).
    """
    var_dir = var_dir.resolve()
    if homes_dir is not None and homes_dir.resolve().is_relative_to(var_dir):
        raise ConfigurationError(
            f"[hub] homes_dir={homes_dir} is inside the state folder {var_dir}, which is closed to users' "
            "servers; choose a folder outside it (the default is /home)"
        )
    var_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(var_dir, 0o700)
    secrets = var_dir / "secrets"
    if secrets.exists():
        os.chmod(secrets, 0o700)
        for item in secrets.iterdir():
            if item.is_file():
                os.chmod(item, 0o600)
