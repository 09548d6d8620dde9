"""The federation's loopback firewall and token-free SuperExec, on real sockets and processes.

Another account is ``nobody`` (what a user's kernel is to the platform: a different uid on the
same loopback). The firewall's table is real nftables in this machine's network namespace, on a
port nothing else uses, removed in ``finally``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import ExecutionSpec

from medimg_hub.federation import superexec
from medimg_hub.federation.firewall import FirewallError, LoopbackFirewall
from medimg_hub.servers.process import free_port

NOBODY = 65534
#: A Python every account may run (this venv's may sit under root's home).
SYSTEM_PYTHON = "/usr/bin/python3"
CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
           "    print('connected')\n"
           "except OSError as exc:\n"
           "    print(type(exc).__name__)\n")


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def listening() -> Iterator[int]:
    """A loopback HTTP server (as root, like the SuperLink); its port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _connect_as(uid: int, port: int) -> str:
    kwargs = {} if uid == os.getuid() else {"user": uid, "group": uid, "extra_groups": []}
    proc = subprocess.run([SYSTEM_PYTHON, "-c", CONNECT, str(port)], capture_output=True, text=True, timeout=30,
                          cwd="/", **kwargs)
    return proc.stdout.strip() or proc.stderr


def test_another_account_is_refused_and_the_platform_is_not(listening):
    other_port = free_port()
    firewall = LoopbackFirewall(f"test_{listening}", [listening, other_port], os.getuid())
    assert _connect_as(NOBODY, listening) == "connected"  # open before
    try:
        firewall.apply()
        firewall.apply()  # idempotent: replaces its own table
        assert firewall.installed()
        assert _connect_as(NOBODY, listening) == "ConnectionRefusedError"  # the reset arrives at connect()
        assert _connect_as(os.getuid(), listening) == "connected"
        assert _connect_as(NOBODY, free_port()) == "ConnectionRefusedError"  # (nothing listens: a control)
    finally:
        firewall.remove()
    assert not firewall.installed()
    assert _connect_as(NOBODY, listening) == "connected"
    firewall.remove()  # removing twice is harmless


def test_established_connections_and_replies_pass(listening):
    """Only SYNs are filtered: the platform's own HTTP exchange over a guarded port completes."""
    import http.client

    firewall = LoopbackFirewall(f"test_{listening}", [listening], os.getuid())
    try:
        firewall.apply()
        conn = http.client.HTTPConnection("127.0.0.1", listening, timeout=5)
        for _ in range(3):  # keep-alive requests on one connection
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
        conn.close()
    finally:
        firewall.remove()


def test_refusal_explains_what_to_do(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    with pytest.raises(FirewallError, match="nftables.*loopback_firewall = false"):
        LoopbackFirewall("x", [1], 0).apply()


def test_superexec_hands_the_token_over_in_memory_not_on_the_command_line(monkeypatch, tmp_path):
    """:func:`superexec.launch` runs the app with ``--token-file /dev/fd/N``; the app reads the
    token from it. The app here is a stand-in that records its argv and what the file holds."""
    token = "ab" * 128
    record = tmp_path / "record.txt"
    app = tmp_path / "fake-serverapp"
    app.write_text(f"#!{sys.executable}\nimport sys, pathlib\n"
                   "path = sys.argv[sys.argv.index('--token-file') + 1]\n"
                   f"pathlib.Path({str(record)!r}).write_text(' '.join(sys.argv) + '\\n' + "
                   "pathlib.Path(path).read_text() + '\\n' + str(pathlib.Path(path).is_file()))\n")
    app.chmod(0o755)
    monkeypatch.setitem(superexec.TASK_TYPE_TO_COMMAND, TaskType.SERVER_APP, str(app))
    spec = ExecutionSpec(task_type=TaskType.SERVER_APP, runtime_api_address="127.0.0.1:1", token=token,
                         insecure=True, root_certificates_path=None, runtime_dependency_install=False,
                         parent_pid=None, suppress_output=False, task_id=1)
    assert superexec.launch(None, spec).status.value == "accepted"  # type: ignore[arg-type]
    for _ in range(200):
        if record.exists() and record.read_text().count("\n") == 2:
            break
        threading.Event().wait(0.05)
    argv, received, is_file = record.read_text().split("\n")
    assert received == token and is_file == "True"
    assert token not in argv and "--token " not in argv + " " and "--token-file /dev/fd/" in argv
    assert "--insecure" in argv


def test_shim_is_flower_superexec_first_on_path(tmp_path):
    from medimg_hub.federation.deployment import Federation

    federation = Federation(tmp_path / "var", free_port(), [], gateway_port=free_port())
    shim = federation.write_shims()
    env = federation.env()
    found = subprocess.run(["sh", "-c", "command -v flower-superexec"], env=env, capture_output=True, text=True)
    assert Path(found.stdout.strip()) == shim
    help_text = subprocess.run([str(shim), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--runtime-api-address" in help_text.stdout
