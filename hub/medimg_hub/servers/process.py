"""Start, find and stop the platform's server processes (Orthanc today; the hub,
workers, MLflow and Flower use the same mechanism).

Each service has a pid file and a log file under ``var/run`` and ``var/log``.
Starting a service that already runs does nothing; a pid file whose process is
gone (or is another program) is stale and replaced. Processes run in their own
session so that stopping the command line does not stop them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medimg_kernel.errors import MedImgError

log = logging.getLogger(__name__)


class ServiceError(MedImgError, RuntimeError):
    """A platform service failed to start or stop; the message says where its log is."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ``medimg status`` shows for one service."""

    name: str
    running: bool
    pid: int | None
    url: str
    log_file: Path


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for tests and ad-hoc services)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """One long-running server process owned by the platform.

    Parameters
    ----------
    name
        Service name, used for the pid and log file names.
    argv
        The command line; ``argv[0]`` is also used to recognise the process.
    var_dir
        The platform's state folder (pid files in ``run/``, logs in ``log/``).
    ready
        Returns True once the service answers; polled after start.
    url
        Where the service can be reached, for status output.
    marker
        A string the process's command line must contain to be recognised as this service
        (for services run by a generic interpreter such as ``python``).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        var_dir: Path,
        *,
        ready: Callable[[], bool],
        url: str,
        env: dict[str, str] | None = None,
        marker: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.url = url
        self.env = env
        self.marker = marker
        self.pid_file = var_dir / "run" / f"{name}.pid"
        self.log_file = var_dir / "log" / f"{name}.log"

    def pid(self) -> int | None:
        """The pid of the running service, or None (removing a stale pid file)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_our_process(pid, self.argv[0], self.marker):
            return pid
        log.info("removing stale pid file %s (pid %d is not %s)", self.pid_file, pid, self.name)
        self.pid_file.unlink(missing_ok=True)
        return None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(self.name, pid is not None, pid, self.url, self.log_file)

    def start(self, timeout_s: float = 30.0, *, ports: Sequence[tuple[str, int]] = (),
              prepare: Callable[[], object] | None = None) -> bool:
        """Start the service unless it runs; wait until it answers.

        Parameters
        ----------
        timeout_s
            Seconds to wait until it answers.
        ports
            ``(setting, port)`` pairs the service listens on, e.g. ``("[pacs] http_port", 8042)``:
            one already in use by another program is refused, naming the setting to change.
        prepare
            Called just before starting (write configuration, make folders), not when it runs.

        Returns
        -------
        bool
            True if this call started it, False if it was already running.
        """
        if self.pid() is not None:
            return False
        for setting, port in ports:
            if port_in_use("127.0.0.1", port):
                raise ServiceError(f"{self.name}: port {port} is already in use by another program; set "
                                   f"{setting} in the settings file to a free port")
        if prepare is not None:
            prepare()
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log_fh:
            proc = subprocess.Popen(  # noqa: S603 - argv comes from settings, not users
                self.argv, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=self.env,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"see {self.log_file}:\n{_tail(self.log_file)}"
                )
            if self.ready():
                log.info("%s started (pid %d) at %s", self.name, proc.pid, self.url)
                return True
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"{self.name} did not answer within {timeout_s:.0f} s; see {self.log_file}")

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop the service and its children (SIGTERM to its process group, SIGKILL after
        ``timeout_s``); True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, pid, timeout_s)
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        _signal_group(pid, signal.SIGKILL)  # children that outlived their parent (e.g. uvicorn under mlflow)
        self.pid_file.unlink(missing_ok=True)
        return True


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (each service runs in its own session)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaping our own children)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _is_our_process(pid: int, executable: str, marker: str | None = None) -> bool:
    """Whether ``pid`` is alive and runs ``executable`` (guards against pid reuse).

    Matches the command line's program (also when the process rewrote its title, as Redis
    does: ``redis-server 127.0.0.1:6390``) or the executable file itself.
    """
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, PermissionError):
        return False
    if marker is not None and marker.encode() not in b" ".join(cmdline):
        return False
    name = os.path.basename(executable).encode()
    programs = [part.split(b" ", 1)[0] for part in cmdline[:2] if part]
    if any(os.path.basename(program) == name for program in programs):
        return True
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(executable)
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
