"""Secrets generated on first use and kept under ``var/secrets`` (mode 0600), hub side only."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

#: Length in bytes of generated secrets (~43 URL-safe characters).
SECRET_BYTES = 32


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path``, readable by the owner only: the file is created 0600
    (never readable by others, not even for a moment) in a folder made 0700. The one writer of every
    hub-side secret: generated passwords, the hub's tokens, the federation's private keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.chmod(path, 0o600)


def stored_secret(path: Path, fields: dict[str, str | None]) -> dict[str, str]:
    """The JSON secret in ``path``; created with ``fields`` (``None`` values generated) if absent."""
    if path.exists():
        return json.loads(path.read_text())
    values = {k: v if v is not None else secrets.token_urlsafe(SECRET_BYTES) for k, v in fields.items()}
    write_private(path, json.dumps(values))
    return values
