"""A real, throw-away PostgreSQL server for tests (Debian's postgresql binaries).

``PostgresServer`` runs ``initdb`` in a temporary folder, starts ``postgres`` on a free
loopback port with its socket in that folder, creates databases on request, and stops
the server and removes the folder in :meth:`PostgresServer.stop`. As root, the server
runs as the ``postgres`` OS user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from medimg_hub.servers.process import free_port

def _server_bin() -> Path:
    """The PostgreSQL server binaries: ``$MEDIMG_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin``
    (Debian installs each major version there: 15 on Debian 12, 17 on Debian 13)."""
    if os.environ.get("MEDIMG_PG_BIN"):
        return Path(os.environ["MEDIMG_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if
                   p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/VERSION/bin")


PG_BIN = _server_bin()


def postgres_available() -> str | None:
    """``None`` when a server can be started here, else the reason it cannot."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return (f"PostgreSQL server binaries not found in {PG_BIN} (Debian package postgresql, which "
                "scripts/bootstrap.sh installs; or set MEDIMG_PG_BIN)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run the server as"
    return None


class PostgresServer:
    """A PostgreSQL server in a temporary folder; trust authentication on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="medimg-pg-"))
        self.data = self.dir / "data"
        self._counter = 0
        self._started = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_user, *argv], capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        """initdb and start; raises ``RuntimeError`` with the server's log on failure."""
        init = self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                         "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=50")
        start = self._run(str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                          "-l", str(self.dir / "server.log"), "-o", options, timeout=90)
        self._started = True
        if start.returncode != 0:
            log = (self.dir / "server.log").read_text(errors="replace") if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"postgres did not start:\n{start.stdout}\n{start.stderr}\n{log[-3000:]}")

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of ``database``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._counter += 1
        name = f"test_{self._counter}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its folder; safe to call twice."""
        try:
            if self._started and self.data.exists():
                self._run(str(PG_BIN / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(self.data))
        finally:
            self._started = False
            shutil.rmtree(self.dir, ignore_errors=True)
