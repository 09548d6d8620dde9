"""Log lines without DICOM identifiers: UIDs become keyed pseudonyms before anything is written.

Request URLs hold Study, Series and SOP Instance UIDs (``/dicom-web/studies/1.2.840.../series/...``),
and UIDs identify a patient's examination as surely as a name. The platform's own access logs
already leave URLs out; what remains is other programs' output (configurable-http-proxy prints the
URL of every request it fails to proxy) and tracebacks. Both pass through :func:`redact`, which
replaces every UID by ``uid:<10 hex digits>``: an HMAC of the UID under a key kept hub side
(``var/secrets/log-pseudonyms.json``, 0600), so the same study reads the same in every log line
and every service, an operator can still follow one study through the logs (and find it in the
audit log, which holds UIDs under access control), and nobody can turn a log line back into a UID.

* :class:`RedactingFormatter` wraps a log formatter: the platform's services and CLI install it on
  their handlers (:func:`install`), JupyterHub builds it from its logging config
  (:func:`redacting_formatter`, ``c.JupyterHub.logging_config`` in hub/jupyterhub_config.py).
* ``python -m medimg_hub.servers.logs -- COMMAND...`` runs COMMAND with its output redacted line by
  line, forwarding SIGTERM/SIGINT and its exit status: JupyterHub starts configurable-http-proxy so.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

#: A DICOM UID (PS3.5 §9): root 0, 1 or 2, then numeric components without leading zeros. Five or
#: more components (IPv4 addresses (4) and version numbers are left alone), or a UUID-derived UID
#: (2.25.<integer of 10 or more digits>: three components, as highdicom and pydicom make them).
UID = re.compile(r"(?<![\w.])(?:[0-2](?:\.(?:0|[1-9][0-9]*)){4,}|2\.25\.[1-9][0-9]{9,})(?![\w.])")
#: Environment variable naming the key file for processes that get no settings (the proxy's pipe).
KEY_FILE_ENV = "MEDIMG_LOG_PSEUDONYM_KEY_FILE"


def key_file(var_dir: Path) -> Path:
    """Where the pseudonym key lives (``var/secrets``, hub side only)."""
    return var_dir / "secrets" / "log-pseudonyms.json"


def load_key(path: Path | None) -> bytes:
    """The pseudonym key in ``path`` (created 0600 on first use); a random one when ``path`` is None."""
    if path is None:
        return os.urandom(32)
    from medimg_hub.secrets import stored_secret

    return stored_secret(path, {"key": None})["key"].encode()


def redact(text: str, key: bytes) -> str:
    """``text`` with every DICOM UID replaced by its pseudonym ``uid:<hmac>``."""
    return UID.sub(lambda m: "uid:" + hmac.new(key, m.group(0).encode(), hashlib.sha256).hexdigest()[:10], text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback) has its UIDs pseudonymised.

    Parameters
    ----------
    inner
        The formatter that lays the record out (its format, colours, dates are kept).
    key
        The pseudonym key (:func:`load_key`).
    """

    def __init__(self, inner: logging.Formatter, key: bytes) -> None:
        super().__init__()
        self.inner = inner
        self._key = key

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self._key)


def install(key: bytes) -> None:
    """Redact every handler of the root logger (called once, after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter(), key))


def redacting_formatter(**config: str) -> logging.Formatter:
    """A ``logging.config`` factory (``"()"``): the formatter named by ``class`` (built with its
    ``format`` and ``datefmt``), redacted with the key in ``$MEDIMG_LOG_PSEUDONYM_KEY_FILE``."""
    module, _, name = config.get("class", "logging.Formatter").rpartition(".")
    inner = getattr(importlib.import_module(module), name)(fmt=config.get("format"), datefmt=config.get("datefmt"))
    path = os.environ.get(KEY_FILE_ENV)
    return RedactingFormatter(inner, load_key(Path(path) if path else None))


def _pump(source: IO[bytes], target: IO[bytes], key: bytes) -> None:
    for line in iter(source.readline, b""):
        target.write(redact(line.decode("utf-8", "replace"), key).encode())
        target.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m medimg_hub.servers.logs -- COMMAND ARGS...``: run COMMAND, its output redacted."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m medimg_hub.servers.logs -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    path = os.environ.get(KEY_FILE_ENV)
    key = load_key(Path(path) if path else None)
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _f: child.send_signal(s))
    pumps = [threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer, key), daemon=True),
             threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer, key), daemon=True)]
    for pump in pumps:
        pump.start()
    code = child.wait()
    for pump in pumps:
        pump.join(5)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
