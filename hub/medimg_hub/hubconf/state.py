"""Where the hub keeps its state: ``var/hub/`` (mode 0700) with 0600 secrets."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from medimg_kernel.errors import ConfigurationError

from medimg_hub.secrets import write_private
from medimg_hub.settings import Settings, dump_settings


@dataclass(frozen=True)
class HubState:
    """Paths of the hub's database, secrets, pid files and the settings file its children read."""

    hub_dir: Path
    settings_file: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> HubState:
        """The state folder of ``settings`` (created 0700); the settings file (dumped if built in code)."""
        hub_dir = settings.var_dir / "hub"
        hub_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(hub_dir, 0o700)
        settings_file = settings.config_file or dump_settings(settings, settings.var_dir / "run" / "settings.toml")
        return cls(hub_dir, Path(settings_file))

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.hub_dir / 'jupyterhub.sqlite'}"

    @property
    def cookie_secret_file(self) -> Path:
        return self.hub_dir / "jupyterhub_cookie_secret"

    @property
    def proxy_pid_file(self) -> Path:
        return self.hub_dir / "proxy.pid"

    def secret(self, name: str) -> str:
        """The secret in ``var/hub/<name>`` (0600), generated on first use."""
        path = self.hub_dir / name
        if not path.exists():
            write_private(path, secrets.token_hex(32))
        os.chmod(path, 0o600)
        return path.read_text().strip()

    def cookie_secret(self) -> Path:
        """The cookie secret file (hex, 0600), generated on first use."""
        self.secret(self.cookie_secret_file.name)
        return self.cookie_secret_file


def proxy_command() -> list[str]:
    """configurable-http-proxy (next to the running Python, else on PATH), its output passed through
    ``medimg_hub.servers.logs`` so that the URLs it logs carry no DICOM UIDs."""
    beside = Path(sys.executable).parent / "configurable-http-proxy"
    found = str(beside) if beside.exists() else shutil.which("configurable-http-proxy")
    if not found:
        raise ConfigurationError("configurable-http-proxy not found: install it with npm "
                                 "(scripts/bootstrap.sh does) or put it on PATH")
    return [sys.executable, "-m", "medimg_hub.servers.logs", "--", found]
