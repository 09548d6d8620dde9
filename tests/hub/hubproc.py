"""A real JupyterHub (+ configurable-http-proxy) on free loopback ports, and a browser-like client.

``running_hub(tmp, spawner=...)`` builds settings in code, dumps them with ``dump_settings``,
creates the demo logins and starts ``jupyterhub -f hub/jupyterhub_config.py`` through
:class:`medimg_hub.servers.jupyterhub.JupyterHubServer`; it always stops the hub (which stops users'
servers and the proxy) on exit. :class:`HubBrowser` logs in through the login form (with the
xsrf cookie), spawns through the form or the REST API, and runs code in a kernel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from medimg_hub.demo.users import ensure_demo_users
from medimg_hub.servers.jupyterhub import JupyterHubServer
from medimg_hub.servers.process import free_port
from medimg_hub.settings import (HubSettings, MlflowSettings, PlatformSettings, ReviewSettings, Settings, dump_settings,
                                 load_settings)

REPO = Path(__file__).resolve().parents[2]
VENV_SITE = Path(sysconfig.get_paths()["purelib"])  # the site-packages of the interpreter running the tests


@dataclass
class Hub:
    """A running hub: its settings, URL and the demo passwords."""

    settings: Settings
    url: str
    passwords: dict[str, str]
    log_file: Path


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def user_readable_python(root: Path) -> str:
    """A Python that OS accounts without access to /root can run, over the project's venv.

    The project's venv is built on a pyenv Python under /root (mode 0700), which system accounts
    cannot execute. This makes a venv from Debian's /usr/bin/python3.11 (same minor version, same
    ABI) whose ``.pth`` adds the project's site-packages and the repository root as plain paths
    (the kernel side only, as scripts/bootstrap.sh builds .venv-users), and links
    ``share/jupyter`` (Voila's templates, JupyterLab's assets). A real installation puts the venv
    under /opt instead.
    """
    env_dir = root / "user-venv"
    if not (env_dir / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", str(env_dir)], check=True)
        site = env_dir / "lib" / "python3.11" / "site-packages"
        (site / "medimg-project.pth").write_text(f"{VENV_SITE}\n{REPO}\n{REPO / 'federated'}\n")
        (env_dir / "share").mkdir(exist_ok=True)
        (env_dir / "share" / "jupyter").symlink_to(VENV_SITE.parents[2] / "share" / "jupyter")
    return str(env_dir / "bin" / "python")


@contextmanager
def running_hub(root: Path, *, review: ReviewSettings | None = None, **hub_overrides: object) -> Iterator[Hub]:
    """Start a hub with ``HubSettings(**hub_overrides)`` (and ``review``) on free ports under ``root``; stop it after.

    MLflow's settings get a free port too (the hub's MLflow service forwards there; tests that
    use it start the tracking server with :class:`medimg_hub.tracking.server.MlflowServer`).
    """
    port, api_port, proxy_api_port, platform_port, mlflow_proxy_port, mlflow_port = _free_ports(6)
    hub_settings = dataclasses.replace(HubSettings(), port=port, api_port=api_port, proxy_api_port=proxy_api_port,
                                       platform_api_port=platform_port, mlflow_proxy_port=mlflow_proxy_port,
                                       **hub_overrides)
    built = dataclasses.replace(Settings(), platform=PlatformSettings(var_dir=root / "var", start_timeout_s=60.0),
                                hub=hub_settings, mlflow=MlflowSettings(port=mlflow_port),
                                review=review or ReviewSettings())
    settings = load_settings(dump_settings(built, root / "settings.toml"))
    passwords = ensure_demo_users(settings)
    server = JupyterHubServer(settings)
    try:
        server.start()
        yield Hub(settings, server.url, passwords, server.process.log_file)
    finally:
        server.stop()


class HubBrowser(requests.Session):
    """A requests session that behaves like a browser against the hub (cookies, xsrf, redirects)."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub

    def xsrf(self) -> str:
        return self.cookies.get("_xsrf", path="/hub/") or self.cookies.get("_xsrf") or ""

    def login(self, username: str, password: str) -> requests.Response:
        """Log in through the login form; returns the response after redirects."""
        self.get(f"{self.hub.url}/hub/login", timeout=10).raise_for_status()
        return self.post(f"{self.hub.url}/hub/login", timeout=30,
                         data={"username": username, "password": password, "_xsrf": self.xsrf()})

    def logged_in(self, response: requests.Response) -> bool:
        return "/hub/login" not in response.url

    def spawn_form(self, username: str, profile: str, timeout_s: float = 60.0) -> requests.Response:
        """Submit the spawn form (a user with one profile gets none: opening the spawn page starts it),
        wait for the server, and follow the OAuth dance to the landing page."""
        response = self.get(f"{self.hub.url}/hub/spawn/{username}", timeout=30)
        if 'name="profile"' in response.text:
            response = self.post(f"{self.hub.url}/hub/spawn/{username}", timeout=30,
                                 data={"profile": profile, "_xsrf": self.xsrf()})
        deadline = time.monotonic() + timeout_s
        while "spawn-pending" in response.url and time.monotonic() < deadline:
            time.sleep(0.5)
            response = self.get(f"{self.hub.url}/hub/spawn-pending/{username}", timeout=30)
            if "spawn-pending" in response.url and "Spawn failed" in response.text:
                return response
        if "spawn-pending" not in response.url and "/user/" not in response.url:
            return response
        return self.get(f"{self.hub.url}/user/{username}/", timeout=60)

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """A hub REST API call authenticated by the login cookie (with the xsrf token)."""
        headers = {"X-XSRFToken": self.xsrf()}
        return self.request(method, f"{self.hub.url}/hub/api{path}", headers=headers, timeout=60, **kwargs)

    def new_token(self, username: str) -> str:
        response = self.api("POST", f"/users/{username}/tokens", json={"note": "test", "expires_in": 600})
        response.raise_for_status()
        return response.json()["token"]


def wait_server(hub: Hub, token: str, username: str, timeout_s: float = 60.0) -> dict:
    """Wait until ``username``'s server is ready; returns the user model."""
    deadline = time.monotonic() + timeout_s
    while True:
        model = requests.get(f"{hub.url}/hub/api/users/{username}", timeout=10,
                             headers={"Authorization": f"token {token}"}).json()
        server = model.get("servers", {}).get("", {})
        if server.get("ready") or time.monotonic() > deadline:
            return model
        time.sleep(0.5)


async def _run_code(ws_url: str, token: str, code: str, timeout_s: float) -> dict[str, str]:
    request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
    conn = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out = {"stdout": "", "stderr": "", "error": ""}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(conn.read_message(), timeout=max(0.1, deadline - time.monotonic()))
        if raw is None:
            break
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out[content["name"]] += content["text"]
        elif kind == "error":
            out["error"] += f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            break
    conn.close()
    return out


def run_in_kernel(hub: Hub, username: str, token: str, code: str, timeout_s: float = 60.0) -> dict[str, str]:
    """Start a kernel in ``username``'s JupyterLab server, run ``code``, return stdout/stderr/error."""
    base = f"{hub.url}/user/{username}"
    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    try:
        ws_url = re.sub(r"^http", "ws", f"{base}/api/kernels/{kernel_id}/channels")
        return asyncio.run(_run_code(ws_url, token, code, timeout_s))
    finally:
        requests.delete(f"{base}/api/kernels/{kernel_id}", headers=headers, timeout=30)


def hub_log_tail(hub: Hub, lines: int = 60) -> str:
    try:
        return "\n".join(hub.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no hub log)"


def chmod_tree_open(path: Path) -> None:
    """Make ``path`` traversable by OS accounts (tests put homes and envs under /tmp)."""
    os.chmod(path, 0o755)
