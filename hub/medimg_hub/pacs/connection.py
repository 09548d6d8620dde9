"""The platform's way to its PACS: the embedded Orthanc, or a hospital's DICOMweb PACS by URL.

Everything hub-side that talks to the PACS (the gateway, workers, review, imports, the receiver,
federation sites, the CLI) gets a :class:`PacsConnection` from :func:`pacs_connection` and never
builds URLs or credentials itself. ``[pacs] url`` empty: the embedded Orthanc, basic
authentication with the account under ``var/secrets/orthanc.json``. Set: that service, with
``[pacs] auth`` none, basic (a JSON credentials file), bearer (a token file) or a TLS client
certificate, and TLS verified against ``ca_file`` or the system's CAs.

The credentials stay on the hub side: never in URLs, logs or a ``repr``.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from medimg_kernel.client import DICOMwebHTTPClient
from medimg_kernel.errors import ConfigurationError

from medimg_hub.settings import Settings


@dataclass(frozen=True)
class PacsConnection:
    """A DICOMweb service and how to authenticate to it.

    Attributes
    ----------
    dicomweb_url
        Base URL (no trailing ``/``), e.g. ``http://127.0.0.1:8042/dicom-web``.
    basic
        (username, password) for HTTP basic authentication, or None.
    bearer
        A bearer token (``Authorization: Bearer ...``), or None.
    client_cert
        (certificate, key) PEM files for TLS client authentication, or None.
    verify
        TLS verification: True (system CAs), False, or a CA bundle's path.
    embedded
        Whether this is the platform's own Orthanc.
    """

    dicomweb_url: str
    basic: tuple[str, str] | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)
    client_cert: tuple[str, str] | None = None
    verify: bool | str = True
    embedded: bool = True

    @property
    def is_tls(self) -> bool:
        return self.dicomweb_url.startswith("https://")

    def headers(self) -> dict[str, str]:
        """Request headers that authenticate (bearer only; basic goes through the session's auth)."""
        return {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}

    def session(self) -> requests.Session:
        """A requests session that authenticates to the PACS (no proxies from the environment)."""
        session = requests.Session()
        session.trust_env = False
        if self.basic:
            session.auth = self.basic
        session.headers.update(self.headers())
        if self.client_cert:
            session.cert = self.client_cert
        session.verify = self.verify
        return session

    def ssl_context(self) -> ssl.SSLContext | bool:
        """For aiohttp: the TLS context (CA, client certificate), or True/False for plain defaults."""
        if not self.is_tls:
            return True
        context = ssl.create_default_context(cafile=self.verify if isinstance(self.verify, str) else None)
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            context.load_cert_chain(*self.client_cert)
        return context

    def client(self) -> DICOMwebHTTPClient:
        """A DICOMweb client with the platform's access (hub side only)."""
        return DICOMwebHTTPClient(self.dicomweb_url, session=self.session())


def _read(settings: Settings, section: str, key: str, value: str) -> Path:
    path = settings.resolve(Path(value))
    if not path.is_file():
        raise ConfigurationError(f"{section} {key}={str(path)!r} does not exist or is not a file")
    return path


def pacs_connection(settings: Settings) -> PacsConnection:
    """The PACS ``[pacs]`` describes.

    Raises
    ------
    ConfigurationError
        A credentials, certificate or CA file named in ``[pacs]`` is missing or malformed.
    """
    if not settings.pacs.url:
        from medimg_hub.pacs.orthanc import OrthancServer

        server = OrthancServer(settings)
        creds = server.credentials()
        return PacsConnection(server.dicomweb_url, basic=(creds.username, creds.password))
    return service_connection(settings, settings.pacs, "[pacs]")


def remote_connection(settings: Settings, name: str) -> PacsConnection:
    """The ``[[remotes]]`` service called ``name`` (a PACS to pull from).

    Raises
    ------
    ConfigurationError
        No remote has that name (the message lists them), or one of its files is missing.
    """
    for remote in settings.remotes:
        if remote.name == name:
            return service_connection(settings, remote, f"[[remotes]] {name}:")
    raise ConfigurationError(f"no [[remotes]] table is called {name!r}; known: {[r.name for r in settings.remotes]}")


def service_connection(settings: Settings, service: Any, section: str) -> PacsConnection:
    """A connection from a table with ``url``, ``auth``, ``credentials_file``, ``client_certificate``,
    ``client_key``, ``verify_tls`` and ``ca_file`` (``[pacs]`` or a ``[[remotes]]`` table)."""
    verify: bool | str = service.verify_tls
    if service.verify_tls and service.ca_file:
        verify = str(_read(settings, section, "ca_file", service.ca_file))
    basic = bearer = cert = None
    if service.auth == "basic":
        try:
            raw = json.loads(_read(settings, section, "credentials_file", service.credentials_file).read_text())
            basic = (str(raw["username"]), str(raw["password"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{section} credentials_file must hold JSON {{\"username\": ..., "
                                     "\"password\": ...}") from exc
    elif service.auth == "bearer":
        bearer = _read(settings, section, "credentials_file", service.credentials_file).read_text().strip()
        if not bearer:
            raise ConfigurationError(f"{section} credentials_file (auth = bearer) is empty: it must hold the token")
    elif service.auth == "client-certificate":
        cert = (str(_read(settings, section, "client_certificate", service.client_certificate)),
                str(_read(settings, section, "client_key", service.client_key)))
    return PacsConnection(service.url.rstrip("/"), basic=basic, bearer=bearer, client_cert=cert, verify=verify,
                          embedded=False)


__all__ = ["PacsConnection", "pacs_connection", "remote_connection", "service_connection"]
