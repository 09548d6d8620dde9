"""Login throttling that a stranger cannot turn against a user.

NativeAuthenticator locks the *named account* after N failures, whoever sends them: one wrong
password every few minutes from anywhere keeps a clinician out for good. Here failures count
per **(account, client)**, where the client is the browser when it holds a *device cookie* that
an earlier successful login of that account left (OWASP's "device cookies"), else the source
address. So:

* a client gets ``free_attempts`` failures, then waits ``2**k`` seconds after its k-th further
  failure, capped at ``max_delay_s`` (growing delays, not a fixed lock);
* a success resets that client's counter;
* failures of untrusted clients (no device cookie) also count per account; past
  ``account_failures`` of them within ``max_delay_s`` every *untrusted* client of that account waits
  (a spread-out guessing attack), while the user's own browser, holding its device cookie,
  still logs in with the right password;
* every throttled attempt is logged (user name, client kind, wait; never the password or the
  address) and counted in the hub's Prometheus metrics, so admins see an attack;
* ``medimg users unlock NAME`` (:meth:`LoginThrottle.unlock`) clears an account's counters.

Counters live in a small SQLite file under ``var/hub`` (0600), so they survive a hub restart.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

THROTTLED = Counter("medimg_login_throttled_total", "Login attempts refused because the client must wait",
                    ["client"])
FAILED = Counter("medimg_login_failed_total", "Failed login attempts", ["client"])

_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_failures (
    username TEXT NOT NULL, client TEXT NOT NULL, count INTEGER NOT NULL,
    last_at REAL NOT NULL, wait_until REAL NOT NULL, PRIMARY KEY (username, client))
"""
#: The per-account row of untrusted clients' failures.
ACCOUNT = "*untrusted*"


def throttle_file(settings: Settings) -> Path:
    """Where the hub keeps the counters: ``var/hub/login-throttle.sqlite`` (the hub's private folder)."""
    return settings.var_dir / "hub" / "login-throttle.sqlite"


@dataclass(frozen=True)
class Wait:
    """A refused attempt: the client may try again in ``seconds``."""

    seconds: float


def client_key(*, device_trusted: bool, address: str | None) -> str:
    """The throttling key of a client: its device cookie, else a hash of its address (no raw IPs stored)."""
    if device_trusted:
        return "device"
    return "addr:" + hashlib.sha256((address or "unknown").encode()).hexdigest()[:16]


class LoginThrottle:
    """Failed-login counters per (account, client) with growing delays.

    Parameters
    ----------
    path
        The SQLite file (created 0600 if missing); ``None`` keeps counters in memory.
    free_attempts
        Failures a client may make before it has to wait.
    max_delay_s
        The longest wait (seconds); also the window of the per-account count.
    account_failures
        Failures of untrusted clients per account (within ``max_delay_s``) before every untrusted
        client of that account waits.
    clock
        Seconds since the epoch (injected by tests).
    """

    def __init__(self, path: Path | None, *, free_attempts: int = 5, max_delay_s: float = 300.0,
                 account_failures: int = 50, clock: Callable[[], float] = time.time) -> None:
        self.free_attempts = free_attempts
        self.max_delay_s = max_delay_s
        self.account_failures = account_failures
        self._clock = clock
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=10, check_same_thread=False)
        self._db.execute(_SCHEMA)
        self._db.commit()
        if path is not None:
            path.chmod(0o600)

    def _row(self, username: str, client: str) -> tuple[int, float, float]:
        row = self._db.execute("SELECT count, last_at, wait_until FROM login_failures WHERE username = ? AND "
                               "client = ?", (username, client)).fetchone()
        return (int(row[0]), float(row[1]), float(row[2])) if row else (0, 0.0, 0.0)

    def check(self, username: str, client: str) -> Wait | None:
        """``None`` when ``client`` may try to log in as ``username`` now, else how long it must wait."""
        now = self._clock()
        waits = [self._row(username, client)[2] - now]
        if client != "device":
            count, last_at, _ = self._row(username, ACCOUNT)
            if count >= self.account_failures and now - last_at < self.max_delay_s:
                waits.append(last_at + self.max_delay_s - now)
        wait = max(waits)
        if wait <= 0:
            return None
        THROTTLED.labels("device" if client == "device" else "address").inc()
        log.warning("login of %s refused for %.0f s: too many failures from this %s", username, wait,
                    "browser" if client == "device" else "address or account")
        return Wait(wait)

    def failed(self, username: str, client: str) -> None:
        """Count a failure of ``client`` (and of the account, when the client is untrusted)."""
        now = self._clock()
        FAILED.labels("device" if client == "device" else "address").inc()
        keys = [client] if client == "device" else [client, ACCOUNT]
        for key in keys:
            count, last_at, _ = self._row(username, key)
            if key == ACCOUNT and now - last_at >= self.max_delay_s:
                count = 0  # the account-wide count is per window
            count += 1
            beyond = count - self.free_attempts
            wait_until = now + min(2.0 ** (beyond - 1), self.max_delay_s) if key != ACCOUNT and beyond > 0 else 0.0
            self._db.execute("INSERT OR REPLACE INTO login_failures VALUES (?, ?, ?, ?, ?)",
                             (username, key, count, now, wait_until))
            if key == ACCOUNT and count == self.account_failures:
                log.warning("account %s: %d failed logins from untrusted clients within %.0f s; untrusted clients "
                            "wait, the user's own browser can still log in", username, count, self.max_delay_s)
        self._db.commit()

    def succeeded(self, username: str, client: str) -> None:
        """Reset ``client``'s counter for ``username`` (the account-wide count stays until its window ends)."""
        self._db.execute("DELETE FROM login_failures WHERE username = ? AND client = ?", (username, client))
        self._db.commit()

    def unlock(self, username: str) -> int:
        """Clear every counter of ``username`` (an admin's unlock); returns the rows removed."""
        removed = self._db.execute("DELETE FROM login_failures WHERE username = ?", (username,)).rowcount
        self._db.commit()
        log.warning("login counters of %s cleared by an admin", username)
        return removed
