"""The embedded PACS: an Orthanc process with its DICOMweb plugin, configured under ``var/``.

Hub side only: Orthanc's credentials are generated here, kept in
``var/secrets/orthanc.json`` (mode 0600) and never handed to kernels, which
reach images through the platform's gateway.

Security posture of the generated configuration:

* HTTP authentication on, with one generated account;
* ``RemoteAccessAllowed`` false: Orthanc 1.10 has no bind-address option and
  listens on every interface, but answers only loopback clients;
* the DICOM (DIMSE) server off unless ``[pacs] dicom_port`` is set;
* Lua, WebDAV and REST writes to the file system off;
* ``TcpNoDelay`` on (HTTP; and ``TCP_NODELAY=1`` in the environment for the DICOM server, which
  dcmtk reads) and HTTP compression off (DICOMweb bulk data is not compressible and gzip costs
  throughput).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from medimg_kernel.client import DICOMwebHTTPClient

from medimg_hub.secrets import stored_secret, write_private
from medimg_hub.servers.process import ManagedProcess
from medimg_hub.settings import Settings

log = logging.getLogger(__name__)

ORTHANC_USER = "medimg-platform"


@dataclass(frozen=True)
class OrthancCredentials:
    """The one Orthanc account the hub side uses."""

    username: str
    password: str


class OrthancServer:
    """Configure, start, stop and talk to the platform's Orthanc.

    Parameters
    ----------
    settings
        Platform settings; ``[pacs]`` and ``[platform]`` are used.
    """

    name = "pacs"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.var_dir / "orthanc"
        self.config_file = self.home / "orthanc.json"
        self.secret_file = settings.var_dir / "secrets" / "orthanc.json"
        self.base_url = f"http://127.0.0.1:{settings.pacs.http_port}"
        self.dicomweb_url = self.base_url + settings.pacs.dicomweb_root.rstrip("/")
        self.process = ManagedProcess(
            "orthanc",
            [settings.pacs.executable, str(self.config_file)],
            settings.var_dir,
            ready=self.is_ready,
            url=self.dicomweb_url,
            # dcmtk (Orthanc's DICOM networking) leaves Nagle's algorithm on unless told: each C-STORE
            # then waits for a delayed ACK, ~50 ms an instance (measured: 100 CT instances 4.9 s, 0.42 s with this)
            env={**os.environ, "TCP_NODELAY": "1"},
        )

    # -- credentials and configuration ------------------------------------------------

    def credentials(self) -> OrthancCredentials:
        """The account, generated (and stored with mode 0600) on first use."""
        raw = stored_secret(self.secret_file, {"username": ORTHANC_USER, "password": None})
        return OrthancCredentials(raw["username"], raw["password"])

    def configuration(self) -> dict[str, Any]:
        """Orthanc's JSON configuration for these settings."""
        pacs = self.settings.pacs
        creds = self.credentials()
        return {
            "Name": "medimg-pacs",
            "StorageDirectory": str(self.home / "storage"),
            "IndexDirectory": str(self.home / "index"),
            "StorageCompression": False,
            "Plugins": [str(pacs.plugins_dir / "libOrthancDicomWeb.so")],
            "HttpPort": pacs.http_port,
            "HttpThreadsCount": pacs.http_threads,
            "HttpCompressionEnabled": False,
            "HttpDescribeErrors": True,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {creds.username: creds.password},
            "DicomServerEnabled": pacs.dicom_port != 0,
            "DicomPort": pacs.dicom_port or 4242,
            "DicomAet": pacs.aet,
            "DicomCheckCalledAet": True,
            "DicomModalities": {},
            # the most Orthanc allows: fewer PDUs per instance (the platform's receiver takes the same)
            "MaximumPduLength": 131072,
            "ExecuteLuaEnabled": False,
            "WebDavEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "OverwriteInstances": False,
            "SaveJobs": False,
            "DicomWeb": {
                "Enable": True,
                "Root": pacs.dicomweb_root,
                "EnableWado": False,
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }

    def write_configuration(self) -> Path:
        """Write the configuration file (mode 0600: it holds the password)."""
        for sub in ("storage", "index"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        write_private(self.config_file, json.dumps(self.configuration(), indent=2))
        return self.config_file

    # -- lifecycle ---------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A requests session authenticated as the platform's Orthanc account."""
        creds = self.credentials()
        session = requests.Session()
        session.auth = (creds.username, creds.password)
        return session

    def is_ready(self) -> bool:
        """Whether Orthanc answers an authenticated QIDO-RS request."""
        try:
            response = self.session().get(f"{self.dicomweb_url}/studies", params={"limit": 1}, timeout=2)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def start(self) -> bool:
        """Start Orthanc unless it runs; True if started now."""
        # Debian's own orthanc service uses 8042 too: scripts/bootstrap.sh stops and disables it.
        return self.process.start(self.settings.platform.start_timeout_s, prepare=self.write_configuration,
                                  ports=[("[pacs] http_port", self.settings.pacs.http_port)])

    def stop(self) -> bool:
        """Stop Orthanc; True if it was running."""
        return self.process.stop()

    def client(self) -> DICOMwebHTTPClient:
        """A DICOMweb client authenticated as the platform (hub side only)."""
        return DICOMwebHTTPClient(self.dicomweb_url, session=self.session())
