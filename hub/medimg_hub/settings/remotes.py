"""The ``[[remotes]]`` tables of ``medimg.toml``: other DICOMweb services the platform pulls studies from
(``medimg pacs pull --from NAME``), e.g. the hospital's clinical PACS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medimg_kernel.errors import ConfigurationError


@dataclass(frozen=True)
class RemoteSettings:
    """A DICOMweb service to pull from; the keys mean what they mean in ``[pacs]`` for a PACS by URL."""

    name: str = ""
    #: DICOMweb base URL, e.g. "https://pacs.example.org/dicom-web".
    url: str = ""
    #: "none", "basic", "bearer" or "client-certificate" (as ``[pacs] auth``).
    auth: str = "none"
    credentials_file: str = ""
    client_certificate: str = ""
    client_key: str = ""
    verify_tls: bool = True
    ca_file: str = ""


#: How the platform authenticates to a DICOMweb service by URL (``[pacs]``, ``[[remotes]]``, ``[[destinations]]``).
SERVICE_AUTH = ("none", "basic", "bearer", "client-certificate")


def check_service(where: str, service: Any) -> None:
    """Refuse a DICOMweb service table (``url``, ``auth``, ``credentials_file``) that cannot work;
    ``where`` names it in the message."""
    if not service.url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{where}: url={service.url!r} must be an http(s) DICOMweb base URL")
    if service.auth not in SERVICE_AUTH:
        raise ConfigurationError(f"{where}: auth={service.auth!r} must be 'none', 'basic', 'bearer' "
                                 "or 'client-certificate'")
    if service.auth in ("basic", "bearer") and not service.credentials_file:
        raise ConfigurationError(f"{where}: auth={service.auth!r} needs credentials_file")


def validate_remotes(remotes: tuple[RemoteSettings, ...]) -> None:
    """Refuse ``[[remotes]]`` that cannot work, naming the table."""
    names = [r.name for r in remotes]
    for i, remote in enumerate(remotes):
        where = f"[[remotes]] number {i + 1}"
        if not remote.name:
            raise ConfigurationError(f"{where} has no name")
        check_service(f"{where} ({remote.name})", remote)
    if len(set(names)) != len(names):
        raise ConfigurationError(f"[[remotes]] names must be unique: {names}")


__all__ = ["SERVICE_AUTH", "RemoteSettings", "check_service", "validate_remotes"]
