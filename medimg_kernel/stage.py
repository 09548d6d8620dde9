"""What a pipeline stage notebook needs from the platform, and how it reports what it made.

A stage notebook has a cell tagged ``parameters`` that includes ``medimg_job = None``. When the
platform runs the stage, papermill injects ``medimg_job``: the path of a JSON file (mode 0600)
holding the job's identity, where to write outputs, and how to reach the PACS and MLflow.
Run by hand (``medimg_job`` left ``None``), the same calls work against ``connect()``'s
defaults and write outputs to a temporary file, so a notebook is developed as it will run.

Outputs are structured data written through :func:`record_outputs`, never parsed from printed
text: the worker reads them back after the notebook finishes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from .errors import ConfigurationError

#: Keys a stage may record that the platform understands; others are kept as they are.
KNOWN_OUTPUTS = ("seg_sop_instance_uids", "sr_sop_instance_uids", "series_instance_uids", "metrics",
                 "model_name", "model_version", "mlflow_run_id")


@dataclass(frozen=True)
class StageContext:
    """Identity and connections of one running job (see :func:`stage_context`)."""

    job_id: str = ""
    task_id: str = ""
    pipeline_id: str = ""
    stage_id: str = ""
    outputs_path: str = ""
    dicomweb_url: str = ""
    dicomweb_auth: tuple[str, str] | None = None
    #: More of how to reach the PACS when it is a hospital's (``[pacs] url``): headers (a bearer
    #: token), a TLS client certificate (certificate, key) and TLS verification (bool or CA file).
    dicomweb_headers: dict[str, str] = field(default_factory=dict)
    dicomweb_cert: tuple[str, str] | None = None
    dicomweb_verify: bool | str = True
    tracking_uri: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def connect(self) -> Any:
        """A DICOMweb client for this job (the platform's PACS or gateway)."""
        from .client import DICOMwebHTTPClient, connect

        if not self.dicomweb_url:
            return connect()
        session = requests.Session()
        session.trust_env = False
        if self.dicomweb_auth:
            session.auth = self.dicomweb_auth
        session.headers.update(self.dicomweb_headers)
        if self.dicomweb_cert:
            session.cert = self.dicomweb_cert
        session.verify = self.dicomweb_verify
        return DICOMwebHTTPClient(self.dicomweb_url, session=session)

    def to_file(self, path: Path) -> Path:
        """Write the context as JSON readable by the owner only."""
        data = asdict(self)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        return path


def stage_context(medimg_job: str | os.PathLike[str] | None) -> StageContext:
    """The context of the running job, from the ``medimg_job`` parameter papermill injected.

    ``None`` (the notebook run by hand) gives a context whose outputs go to a temporary file and
    whose :meth:`StageContext.connect` uses :func:`medimg_kernel.connect`'s defaults.
    """
    if medimg_job is None:
        fd, path = tempfile.mkstemp(prefix="medimg-outputs-", suffix=".json")
        os.close(fd)
        return StageContext(outputs_path=path)
    try:
        raw = json.loads(Path(medimg_job).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"medimg_job={medimg_job!r} is not a readable job context file: {exc}") from exc
    auth, cert = raw.get("dicomweb_auth"), raw.get("dicomweb_cert")
    return StageContext(**{**raw, "dicomweb_auth": tuple(auth) if auth else None,
                           "dicomweb_cert": tuple(cert) if cert else None})


def record_outputs(context: StageContext, **outputs: Any) -> dict[str, Any]:
    """Record what the stage produced (merged with earlier calls) where the worker reads it.

    Values must be JSON-serialisable: SOP Instance UIDs as strings, metrics as numbers.
    """
    path = Path(context.outputs_path)
    current: dict[str, Any] = {}
    if path.exists() and path.stat().st_size:
        current = json.loads(path.read_text(encoding="utf-8"))
    current.update(outputs)
    try:
        text = json.dumps(current, sort_keys=True)
    except TypeError as exc:
        raise ConfigurationError(f"record_outputs: values must be JSON-serialisable ({exc})") from exc
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return current


def read_outputs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The outputs a stage recorded (empty when it recorded none)."""
    p = Path(path)
    if not p.exists() or not p.stat().st_size:
        return {}
    return json.loads(p.read_text(encoding="utf-8"))
