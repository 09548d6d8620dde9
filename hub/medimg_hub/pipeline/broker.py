"""The task queue's broker on one machine: a Redis server the platform runs on loopback.

Redis (Debian ``redis-server``) redelivers a task whose worker died once the visibility timeout
passes; the file-based kombu transports lose it (DESIGN.md §6). Either way the task store is the
source of truth: its reconciler re-queues jobs whose worker vanished. Redis here listens on
127.0.0.1 only, requires a generated password, and keeps an append-only file under ``var/redis``
so queued tasks survive a restart. With ``[queue] broker_url`` set, nothing is started.
"""

from __future__ import annotations

import socket

from medimg_hub.secrets import stored_secret
from medimg_hub.servers.process import ManagedProcess
from medimg_hub.settings import Settings


class RedisBroker:
    """Start, stop and address the platform's Redis."""

    name = "broker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.queue.redis_port
        self.home = settings.var_dir / "redis"
        self.secret_file = settings.var_dir / "secrets" / "redis.json"
        self.process = ManagedProcess(
            "redis",
            self._argv(),
            settings.var_dir,
            ready=self.is_ready,
            url=f"redis://127.0.0.1:{self.port}/0",
        )

    @property
    def external(self) -> bool:
        """Whether an operator-run broker is configured (then nothing is started here)."""
        return bool(self.settings.queue.broker_url)

    def password(self) -> str:
        return stored_secret(self.secret_file, {"password": None})["password"]

    def url(self) -> str:
        """The broker URL workers and the tasks API use (hub side only: it holds the password)."""
        if self.external:
            return self.settings.queue.broker_url
        return f"redis://:{self.password()}@127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            self.settings.queue.redis_executable, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.home), "--appendonly", "yes", "--appendfsync", "everysec",
            "--protected-mode", "yes", "--daemonize", "no", "--save", "",
            "--requirepass", self.password(),
        ]

    def is_ready(self) -> bool:
        """Whether Redis answers an authenticated PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                password = self.password().encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password))
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    reply += chunk
            return reply.startswith(b"+OK\r\n+PONG")
        except OSError:
            return False

    def start(self) -> bool:
        if self.external:
            return False

        def prepare() -> None:
            self.home.mkdir(parents=True, exist_ok=True)
            self.process.argv = self._argv()

        return self.process.start(self.settings.platform.start_timeout_s, prepare=prepare,
                                  ports=[("[queue] redis_port", self.port)])

    def stop(self) -> bool:
        return self.process.stop()
