"""The federation on one machine, as the real thing: a SuperLink, its Fleet gateway and one
SuperNode per site.

Every process is a :class:`~medimg_hub.servers.process.ManagedProcess` on 127.0.0.1 with explicit
ports (the SuperLink's default, 8000, is JupyterHub's). ``medimg fl up`` starts them,
``medimg fl run`` (:mod:`medimg_hub.federation.platform`) submits the app with ``flwr run federated medimg``, ``medimg fl down``
stops them (with everything they spawned: SuperExec, ServerApp and ClientApp processes).

Layout under ``var/flower/``: ``home/config.toml`` (the private ``FLWR_HOME`` with the
``medimg`` connection), ``bin/flower-superexec`` (the SuperExec shim), ``pki/`` (CA, SuperLink certificate, node keys), ``superlink.db``,
``sites/<site>.json`` (a site's PACS credentials, mode 0600, read by its ClientApp).

Security
--------
With ``tls=True`` the SuperLink serves HTTPS with a certificate from a private CA
(:mod:`medimg_hub.federation.pki`) and nodes verify it; with ``auth=True`` the SuperLink
accepts only SuperNodes whose public key was registered (``flwr supernode register``) and
each node signs with its private key. **The SuperLink serves the Fleet API (for sites) and
the Control API (starts runs, registers nodes — no user authentication in open-source
Flower) on the same port**, so it binds 127.0.0.1 only and the sites connect to the Fleet
gateway (:mod:`medimg_hub.federation.gateway`, ``gateway_port``): a path-filtering reverse
proxy that forwards only ``POST /v1/fleet/...`` and answers everything else 403. Node
signatures pass through it untouched (the SuperLink still verifies them); with TLS it serves
the SuperLink's certificate and verifies the SuperLink against the private CA. ``flwr``
(runs, node registration: the Control API) talks to the SuperLink directly, on loopback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from medimg_hub.federation.firewall import LoopbackFirewall
from medimg_hub.federation.pki import NodeKey, ServerPki, make_node_key, make_server_pki
from medimg_hub.secrets import write_private
from medimg_hub.servers.process import ManagedProcess, ServiceError, free_port, port_in_use

log = logging.getLogger(__name__)

CONNECTION = "medimg"
REPO = Path(__file__).resolve().parents[3]
APP_DIR = REPO / "federated"
#: Every Flower process's environment. The SuperExec looks for new tasks (ServerApp or ClientApp
#: launches) every second by default; on loopback 0.2 s costs nothing and saves ~0.4 s a message.
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}


class FederationError(ServiceError):
    """A federation process failed, or a run did not finish; the message names the log."""


@dataclass(frozen=True)
class SiteNode:
    """One site's SuperNode.

    Attributes
    ----------
    site
        Site name (also the process name ``supernode-<site>``).
    node_config
        Flower node config: ``site`` is added; ``dicomweb-url`` + ``credentials-file``, or ``folder``.
    port
        The SuperNode's own ClientAppIo port (loopback).
    registered
        With authentication on: whether its public key is registered before it starts.
    """

    site: str
    node_config: Mapping[str, str]
    port: int
    registered: bool = True


@dataclass
class Federation:
    """Start, run on, and stop a SuperLink and its SuperNodes.

    Parameters
    ----------
    var_dir
        The platform's state folder; everything goes under ``var_dir/flower``.
    superlink_port
        The SuperLink's one HTTP(S) port on 127.0.0.1 (Fleet + Control + ServerApp APIs).
    sites
        The SuperNodes to start.
    gateway_port
        The Fleet gateway's port: the only address the SuperNodes are given. None: a port free
        when this object is made (tests; the platform passes ``[federation] fleet_gateway_port``).
    tls, auth
        HTTPS with a private CA; SuperNode authentication with registered keys.
    site_workers
        One warm worker process per site (``python -m medimg_federated.site_worker``, with
        ``app_dir`` on its ``PYTHONPATH``): the ClientApp forwards each message to it, so imports
        and the site's data are paid once per run, not per message.
    python_path
        ``PYTHONPATH`` for every Flower process (the app imports ``medimg_kernel``). The app's
        own package reaches the SuperLink and SuperNodes in its FAB (``flwr run APP_DIR``), never
        through ``PYTHONPATH``.
    app_dir
        The Flower app folder (``pyproject.toml`` + ``medimg_federated/``): packed by ``flwr run``,
        and the site workers' ``PYTHONPATH`` entry.
    firewall
        Let only this process's account connect to the SuperLink's and SuperNodes' loopback ports
        (:mod:`medimg_hub.federation.firewall`; needs nftables and root). Off only where no other
        account runs code on the machine.
    """

    var_dir: Path
    superlink_port: int
    sites: Sequence[SiteNode]
    gateway_port: int | None = None
    tls: bool = False
    auth: bool = False
    site_workers: bool = True
    python_path: str = f"{REPO}{os.pathsep}{REPO / 'hub'}"
    app_dir: Path = APP_DIR
    firewall: bool = True
    _pki: ServerPki | None = field(default=None, init=False)
    _keys: dict[str, NodeKey] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.var_dir) / "flower"
        self.flwr_home = self.root / "home"
        self.address = f"127.0.0.1:{self.superlink_port}"
        if self.gateway_port is None:
            self.gateway_port = free_port()
        self.fleet_address = f"127.0.0.1:{self.gateway_port}"
        if self.tls or self.auth:
            self._pki = make_server_pki(self.root / "pki")
        self.superlink = ManagedProcess("superlink", self._superlink_argv(), Path(self.var_dir), env=self.env(),
                                        ready=lambda: port_in_use("127.0.0.1", self.superlink_port),
                                        url=("https://" if self.tls else "http://") + self.address,
                                        marker=f"--port {self.superlink_port}")
        self.gateway = self._gateway_process()
        self.workers = {s.site: self._worker_process(s) for s in self.sites} if self.site_workers else {}
        self.nodes = {s.site: self._node_process(s) for s in self.sites}
        self.loopback_firewall = LoopbackFirewall(f"flower_{self.superlink_port}",
                                                  [self.superlink_port, *(s.port for s in self.sites)], os.getuid())

    @property
    def ca_cert(self) -> Path | None:
        """The private CA's certificate (PEM) sites verify the gateway with; None without TLS or auth."""
        return self._pki.ca_cert if self._pki else None

    # -- processes ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment of every Flower process and of ``flwr`` itself.

        ``PATH`` starts with ``bin/`` (the SuperExec shim, :meth:`write_shims`), then this
        Python's scripts: Flower starts ``flower-superexec``, ``flwr-serverapp`` and
        ``flwr-clientapp`` by name.
        """
        bin_dir = str(Path(sys.executable).parent)
        return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(self.flwr_home), "PYTHONPATH": self.python_path,
                "PATH": os.pathsep.join([str(self.root / "bin"), bin_dir, os.environ.get("PATH", "")])}

    def write_shims(self) -> Path:
        """``bin/flower-superexec``: Flower's SuperExec that keeps run tokens off command lines
        (:mod:`medimg_hub.federation.superexec`), run by this Python."""
        shim = self.root / "bin" / "flower-superexec"
        shim.parent.mkdir(parents=True, exist_ok=True)
        shim.write_text(f"#!{sys.executable}\nimport sys\nfrom medimg_hub.federation.superexec import main\n"
                        "sys.exit(main())\n")
        shim.chmod(0o755)
        return shim

    def _exe(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def _superlink_argv(self) -> list[str]:
        argv = [self._exe("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.superlink_port),
                "--database", str(self.root / "superlink.db"), "--isolation", "subprocess"]
        if self.tls and self._pki:
            argv += ["--ssl-ca-certfile", str(self._pki.ca_cert), "--ssl-certfile", str(self._pki.server_cert),
                     "--ssl-keyfile", str(self._pki.server_key)]
        else:
            argv.append("--insecure")
        if self.auth:
            argv.append("--enable-supernode-auth")
        return argv

    def _gateway_process(self) -> ManagedProcess:
        """The Fleet gateway: sites' only way in (``medimg_hub.federation.gateway``)."""
        scheme = "https" if self.tls else "http"
        argv = [sys.executable, "-m", "medimg_hub.federation.gateway", "--port", str(self.gateway_port),
                "--host", "127.0.0.1", "--upstream", f"{scheme}://{self.address}"]
        if self.tls and self._pki:
            argv += ["--certfile", str(self._pki.server_cert), "--keyfile", str(self._pki.server_key),
                     "--cafile", str(self._pki.ca_cert)]
        port = int(self.gateway_port or 0)
        return ManagedProcess("fleet-gateway", argv, Path(self.var_dir), env=self.env(),
                              ready=lambda: port_in_use("127.0.0.1", port), url=f"{scheme}://{self.fleet_address}",
                              marker=f"medimg_hub.federation.gateway --port {port}")

    def _worker_files(self, site: str) -> tuple[Path, Path]:
        """A site worker's socket and key file (in a 0700 folder; short: Unix socket paths are limited)."""
        return self.root / "w" / f"{node_slug(site)}.sock", self.root / "w" / f"{node_slug(site)}.key"

    def _worker_process(self, node: SiteNode) -> ManagedProcess:
        socket, key = self._worker_files(node.site)
        argv = [sys.executable, "-m", "medimg_federated.site_worker", "--socket", str(socket), "--key-file", str(key)]
        env = self.env() | {"PYTHONPATH": f"{self.app_dir}{os.pathsep}{self.python_path}"}  # the app's package
        return ManagedProcess(f"siteworker-{node.site}", argv, Path(self.var_dir), env=env, ready=socket.exists,
                              url=f"unix:{socket}", marker=f"--socket {socket}")

    def _ensure_worker_key(self, site: str) -> None:
        socket, key = self._worker_files(site)
        socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.workers[site].pid() is None:
            socket.unlink(missing_ok=True)  # a dead worker's socket would look ready
        if not key.exists():
            write_private(key, secrets.token_bytes(32))

    def _node_process(self, node: SiteNode) -> ManagedProcess:
        config = {"site": node.site, **node.node_config}
        if self.site_workers:
            socket, key = self._worker_files(node.site)
            config |= {"worker-socket": str(socket), "worker-key-file": str(key)}
        argv = [self._exe("flower-supernode"), "--superlink", self.fleet_address, "--host", "127.0.0.1",
                "--port", str(node.port), "--isolation", "subprocess",
                "--node-config", " ".join(f'{k}="{v}"' for k, v in config.items())]
        if self.tls and self._pki:
            argv += ["--root-certificates", str(self._pki.ca_cert)]
        else:
            argv.append("--insecure")
        if self.auth:
            key = self._keys.setdefault(node.site, make_node_key(self.root / "pki" / "nodes", node.site))
            argv += ["--auth-supernode-private-key", str(key.private_key)]
        return ManagedProcess(f"supernode-{node.site}", argv, Path(self.var_dir), env=self.env(),
                              ready=lambda: port_in_use("127.0.0.1", node.port), url=f"127.0.0.1:{node.port}",
                              marker=f"--port {node.port}")

    def write_connection(self) -> Path:
        """``$FLWR_HOME/config.toml`` with the ``medimg`` connection (the default)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "{self.address}"']
        if self.tls and self._pki:
            lines.append(f'root-certificates = "{self._pki.ca_cert}"')
        else:
            lines.append("insecure = true")
        path = self.flwr_home / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def up(self, timeout_s: float = 60.0) -> None:
        """Start the SuperLink, register node keys (``auth``), start the Fleet gateway, then every
        SuperNode (connected to the gateway)."""
        for port in [self.superlink_port, int(self.gateway_port or 0), *(s.port for s in self.sites)]:
            if port == 8000:
                raise FederationError("port 8000 is JupyterHub's default; give the federation other ports")
        self.write_connection()
        self.write_shims()
        if self.firewall:
            self.loopback_firewall.apply()  # before anything listens
        self.superlink.start(timeout_s)
        if self.auth:
            for node in self.sites:
                if node.registered:
                    self.register(self._keys[node.site].public_key)
        self.gateway.start(timeout_s)
        for node in self.sites:
            if node.site in self.workers and node.registered:
                self._ensure_worker_key(node.site)
                self.workers[node.site].start(max(timeout_s, 120.0))  # imports torch and MONAI first
        for node in self.sites:
            try:
                self.nodes[node.site].start(timeout_s)
            except ServiceError:
                if node.registered:
                    raise
                log.warning("SuperNode %s (key not registered) was refused, as expected", node.site)

    def online_nodes(self) -> list[int]:
        """Ids of the SuperNodes the SuperLink lists as online (``flwr supernode ls``)."""
        listed = json.loads(self._flwr(["supernode", "ls", CONNECTION, "--format", "json"], timeout_s=60).stdout)
        return [int(n["node-id"]) for n in listed.get("nodes", []) if n.get("status") == "online"]

    def wait_online(self, count: int, timeout_s: float = 60.0) -> list[int]:
        """Wait until at least ``count`` SuperNodes are online; their ids."""
        deadline = time.monotonic() + timeout_s
        while True:
            online = self.online_nodes()
            if len(online) >= count:
                return online
            if time.monotonic() > deadline:
                raise FederationError(f"{len(online)} of {count} SuperNodes online after {timeout_s:.0f} s; "
                                      f"see the supernode-*.log files under {Path(self.var_dir) / 'log'}")
            time.sleep(1.0)

    def register(self, public_key: Path) -> None:
        """Register a SuperNode public key with the SuperLink (over the Control API); idempotent."""
        try:
            self._flwr(["supernode", "register", str(public_key), CONNECTION], timeout_s=60)
        except FederationError as exc:
            if "already" not in str(exc).lower():
                raise
            log.info("SuperNode key %s was already registered", public_key.name)

    def down(self) -> None:
        """Stop every SuperNode, the Fleet gateway and the SuperLink, with the processes they spawned."""
        for process in [*self.nodes.values(), self.gateway, self.superlink, *self.workers.values()]:
            stop_tree(process)
        if self.firewall:
            self.loopback_firewall.remove()

    def kill_node(self, site: str) -> None:
        """SIGKILL a site's SuperNode, its ClientApp processes and its worker (a site that vanishes)."""
        stop_tree(self.nodes[site], sig=signal.SIGKILL)
        if site in self.workers:
            stop_tree(self.workers[site], sig=signal.SIGKILL)

    # -- runs ------------------------------------------------------------------------------

    def _flwr(self, args: Sequence[str], *, timeout_s: float, log_file: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self._exe("flwr"), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout_s, cwd=self.root)
        if log_file is not None:
            log_file.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise FederationError(f"flwr {' '.join(args[:2])} failed (rc {proc.returncode}):\n"
                                  f"{(proc.stdout + proc.stderr)[-3000:]}")
        return proc

    def run(self, run_config: Mapping[str, Any], *, timeout_s: float = 1800.0,
            on_line: Callable[[str], object] | None = None) -> Path:
        """Run the app to completion (``flwr run --stream``); returns the ServerApp log file.

        ``run_config`` overrides the app's ``[tool.flwr.app.config]`` (its keys; the SuperLink
        refuses others by name), written as a TOML file: JSON strings such as ``model-config``
        do not survive the inline form. Each line Flower streams goes to the log file as it comes
        and to ``on_line`` (``medimg fl run`` shows the rounds' progress with it).
        """
        overrides = self.root / "run-config.toml"
        overrides.write_text(tomli_w.dumps(dict(run_config)))
        log_file = Path(self.var_dir) / "log" / "flwr-run.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        args = ["run", str(self.app_dir), CONNECTION, "--stream", "--run-config", str(overrides)]
        proc = subprocess.Popen([self._exe("flwr"), *args], env=self.env(), cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            with log_file.open("w") as log_out:
                assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
                for line in proc.stdout:
                    log_out.write(line)
                    log_out.flush()
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
            returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
        text = log_file.read_text()
        if time.perf_counter() - started >= timeout_s:
            raise FederationError(f"flwr run exceeded {timeout_s:.0f} s ([federation] run_timeout_s); see {log_file}")
        if returncode != 0:
            raise FederationError(f"flwr run failed (rc {returncode}):\n{text[-3000:]}")
        if "ServerApp raised an exception" in text:  # `flwr run --stream` still exits 0
            raise FederationError(f"the ServerApp failed; see {log_file}:\n{text[-3000:]}")
        if "ServerApp finished running" not in text and "Strategy execution finished" not in text:
            raise FederationError(f"the run did not finish; see {log_file}:\n{text[-3000:]}")
        log.info("federated run finished in %.1f s; log %s", time.perf_counter() - started, log_file)
        return log_file


def node_slug(site: str) -> str:
    """``site`` as a file name (letters, digits, ``-``, ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", site)


def _spawned_by(root: int) -> list[int]:
    """Processes descending from ``root``: by parent pid, or by Flower's ``--parent-pid ROOT``.

    Flower starts its SuperExec in a new session (so a process-group kill misses it) and
    tells it its parent with ``--parent-pid``; its own children follow by parent pid.
    """
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            table[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes())
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        marker = b"--parent-pid\0" + str(parent).encode() + b"\0"
        for pid, (ppid, cmdline) in table.items():
            if pid not in found and pid != root and (ppid == parent or marker in cmdline + b"\0"):
                found.append(pid)
                frontier.append(pid)
    return found


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_tree(process: ManagedProcess, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> bool:
    """Stop ``process`` and everything it spawned (SuperExec, ServerApp and ClientApp processes).

    ``sig=SIGKILL`` kills them all at once, as a crash would.
    """
    pid = process.pid()
    if pid is None:
        return False
    children = _spawned_by(pid)
    if sig == signal.SIGKILL:
        _signal_all([pid, *children], signal.SIGKILL)
    process.stop(timeout_s)
    children = [c for c in children if Path(f"/proc/{c}").exists()]
    _signal_all(children, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_running(c) for c in children):
        time.sleep(0.1)
    _signal_all([c for c in children if _running(c)], signal.SIGKILL)
    return True


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


__all__ = ["CONNECTION", "APP_DIR", "FLOWER_ENV", "FederationError", "SiteNode", "Federation", "stop_tree"]
