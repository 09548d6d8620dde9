"""Spawner "system-users": a real kernel runs as its own OS account and cannot read the hub's state.

Needs root (creates and deletes OS accounts ``mtest-*``). The project's venv lives under /root
(0700), so servers run with :func:`hubproc.user_readable_python` (Debian's Python over the same
site-packages), as an installation under /opt would.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from medimg_hub.hubconf.users import delete_os_user, ensure_os_user

from .hubproc import HubBrowser, hub_log_tail, run_in_kernel, running_hub, user_readable_python

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="creates OS accounts: needs root")]

PREFIX = "mtest-"

PROBE = """
import json, os, pwd
result = {"user": pwd.getpwuid(os.getuid()).pw_name}
for label, path in json.loads(PATHS).items():
    try:
        open(path, "rb").read(1)
        result[label] = "READ"
    except PermissionError:
        result[label] = "PermissionError"
    except Exception as exc:
        result[label] = type(exc).__name__
try:
    with open(os.path.join(os.environ["HOME"], "mine.txt"), "w") as fh:
        fh.write("ok")
    result["own_home"] = "written"
except Exception as exc:
    result["own_home"] = type(exc).__name__
print(json.dumps(result))
"""


def test_kernel_cannot_read_secrets_databases_or_other_homes():
    root = Path(tempfile.mkdtemp(prefix="medimg-isolation-"))
    os.chmod(root, 0o755)
    homes = root / "homes"
    homes.mkdir(mode=0o755)
    var = root / "var"
    (var / "secrets").mkdir(parents=True)
    (var / "secrets" / "orthanc.json").write_text('{"username": "medimg-platform", "password": "hub-side only"}')
    os.chmod(var / "secrets" / "orthanc.json", 0o600)
    sqlite3.connect(var / "platform.db").close()
    os.chmod(var / "platform.db", 0o644)  # even a world-readable file under var/ stays closed
    other = ensure_os_user(f"{PREFIX}resident-a", homes)
    other_file = Path(other.pw_dir) / "notes.txt"
    other_file.write_text("private")
    paths = {"orthanc_secret": str(var / "secrets" / "orthanc.json"), "platform_db": str(var / "platform.db"),
             "other_home": str(other_file)}
    try:
        with running_hub(root, spawner="system-users", homes_dir=homes, os_user_prefix=PREFIX,
                         user_python=user_readable_python(root), spawn_timeout_s=60) as hub:
            engineer = HubBrowser(hub)
            assert engineer.logged_in(engineer.login("engineer1", hub.passwords["engineer1"]))
            landing = engineer.spawn_form("engineer1", "engineer-cpu")
            assert landing.url.endswith("/user/engineer1/lab"), hub_log_tail(hub)
            out = run_in_kernel(hub, "engineer1", engineer.new_token("engineer1"),
                                f"PATHS = {json.dumps(json.dumps(paths))}\n{PROBE}")
            assert out["error"] == "", out
            result = json.loads(out["stdout"].strip().splitlines()[-1])
            assert result == {"user": f"{PREFIX}engineer1", "orthanc_secret": "PermissionError",
                              "platform_db": "PermissionError", "other_home": "PermissionError",
                              "own_home": "written"}
            own_home = homes / f"{PREFIX}engineer1"
            assert own_home.stat().st_mode & 0o777 == 0o700
            assert (own_home / "mine.txt").read_text() == "ok"
    finally:
        for name in (f"{PREFIX}engineer1", f"{PREFIX}resident-a"):
            delete_os_user(name)
        shutil.rmtree(root, ignore_errors=True)
