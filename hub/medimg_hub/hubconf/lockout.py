"""Failed-login counters kept in a small SQLite file, so a lockout survives a hub restart.

NativeAuthenticator counts failed logins per user in a dict in memory
(``{"count": n, "time": datetime}``): restarting the hub unlocked every account. The
authenticator (:class:`medimg_hub.hubconf.auth.MedimgNativeAuthenticator`) loads the counters
from this store when it starts and writes a user's counter after every change. Only user
names, counts and times are stored; the file lives in the hub's private state folder (0700).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS login_attempts (username TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at REAL NOT NULL)"


class LoginAttemptStore:
    """Per-user failed-login counters in ``path`` (created if missing).

    Parameters
    ----------
    path
        The SQLite file, e.g. ``var/hub/login-attempts.sqlite``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)
        path.chmod(0o600)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def load(self) -> dict[str, dict[str, Any]]:
        """Every counter, in NativeAuthenticator's form: ``{name: {"count": n, "time": datetime}}``."""
        with self._connect() as db:
            rows = db.execute("SELECT username, count, last_at FROM login_attempts").fetchall()
        return {name: {"count": int(count), "time": datetime.fromtimestamp(last_at)} for name, count, last_at in rows}

    def save(self, username: str, record: dict[str, Any] | None) -> None:
        """Write one user's counter; ``None`` removes it (after a successful login)."""
        with self._connect() as db:
            if record is None:
                db.execute("DELETE FROM login_attempts WHERE username = ?", (username,))
            else:
                db.execute("INSERT OR REPLACE INTO login_attempts (username, count, last_at) VALUES (?, ?, ?)",
                           (username, int(record["count"]), record["time"].timestamp()))
