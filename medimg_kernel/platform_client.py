"""A client of the platform API's tasks and review endpoints (behind the hub's login).

Inside a platform user server, :func:`connect_platform` needs no arguments: the URL comes from
``MEDIMG_PLATFORM_URL`` and the user's JupyterHub token from ``JUPYTERHUB_API_TOKEN``. Like the
DICOMweb client, authentication is a ``requests.Session`` handed in, never stored elsewhere.
HTTP failures become :class:`~medimg_kernel.errors.PlatformAPIError` subclasses.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import requests

from .errors import (AccessDeniedError, CaseClaimedError, ConfigurationError, MedImgError, NotFoundError,
                     PlatformAPIError, ReviewConflictError)

log = logging.getLogger(__name__)

#: Environment variable with the platform API's root URL (set in every platform user server).
PLATFORM_URL_ENV_VAR = "MEDIMG_PLATFORM_URL"
TOKEN_ENV_VAR = "JUPYTERHUB_API_TOKEN"
#: Seconds: (connect, read) timeouts of every request.
TIMEOUT_S = (5.0, 120.0)


class ReviewAPI(Protocol):
    """What the review dashboards need of the platform (an HTTP client here, fakes in tests)."""

    def worklist(self) -> list[dict[str, Any]]: ...
    def review_job(self, job_id: str) -> dict[str, Any]: ...
    def claim(self, job_id: str, *, force: bool = False) -> dict[str, Any]: ...
    def release(self, job_id: str) -> None: ...
    def get_draft(self, job_id: str) -> bytes | None: ...
    def put_draft(self, job_id: str, payload: bytes) -> str: ...
    def delete_draft(self, job_id: str) -> None: ...
    def proposal_labels(self, job_id: str, proposal_id: int) -> bytes: ...
    def decide(self, job_id: str, decision: str, *, reason: str | None = None,
               outputs: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def statistics(self) -> list[dict[str, Any]]: ...


class PlatformClient:
    """The platform API over HTTP.

    Parameters
    ----------
    url
        The platform API's root, e.g. ``https://hub.example.org/services/platform``.
    session
        A ``requests.Session`` carrying the caller's authentication.
    """

    def __init__(self, url: str, session: requests.Session) -> None:
        self.url = url.rstrip("/")
        self._session = session

    def __repr__(self) -> str:
        return f"PlatformClient({self.url!r})"

    # --- transport -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        url = f"{self.url}/api/{path}"
        try:
            response = self._session.request(method, url, timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise PlatformAPIError(f"{method} {path}: cannot reach the platform at {self.url}: {exc}",
                                   url=url) from exc
        if response.status_code in ok:
            return response
        raise _error(method, path, url, response)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # --- tasks -----------------------------------------------------------------------------------

    def tasks(self, limit: int = 100) -> list[dict[str, Any]]:
        """Tasks the caller may see, newest first."""
        return list(self._json("GET", "tasks", params={"limit": limit}))

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"tasks/{task_id}"))

    def decide(self, job_id: str, decision: str, *, reason: str | None = None,
               outputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Decide a manual job (``accepted``, ``corrected``, ``rejected``).

        With ``finalise`` on the dataset the job is completed; with ``review`` only, the decision
        is recorded as a proposal (with the caller's draft labels) and the job keeps waiting: the
        answer then has ``"proposal"`` set.
        """
        body = {"decision": decision, "reason": reason, "outputs": outputs or {}}
        return dict(self._json("POST", f"jobs/{job_id}/decide", json=body, ok=(200, 202)))

    # --- review ----------------------------------------------------------------------------------

    def worklist(self) -> list[dict[str, Any]]:
        """Jobs waiting for the caller's review, oldest first."""
        return list(self._json("GET", "review/worklist"))

    def review_job(self, job_id: str) -> dict[str, Any]:
        """One review job's worklist item with its current ``status``."""
        return dict(self._json("GET", f"review/jobs/{job_id}"))

    def claim(self, job_id: str, *, force: bool = False) -> dict[str, Any]:
        """Claim a case (or renew one's claim); :class:`CaseClaimedError` if someone else holds it."""
        return dict(self._json("POST", f"review/jobs/{job_id}/claim", json={"force": force}))

    def release(self, job_id: str) -> None:
        self._request("DELETE", f"review/jobs/{job_id}/claim", ok=(200, 204))

    def get_draft(self, job_id: str) -> bytes | None:
        """The caller's draft of a case, or ``None``."""
        try:
            return self._request("GET", f"review/jobs/{job_id}/draft").content
        except NotFoundError:
            return None

    def put_draft(self, job_id: str, payload: bytes) -> str:
        """Keep a draft on the platform; returns its time stamp (ISO 8601)."""
        response = self._request("PUT", f"review/jobs/{job_id}/draft", data=payload,
                                 headers={"Content-Type": "application/octet-stream"})
        return str(response.json()["updated_at"])

    def delete_draft(self, job_id: str) -> None:
        self._request("DELETE", f"review/jobs/{job_id}/draft", ok=(200, 204))

    def proposal_labels(self, job_id: str, proposal_id: int) -> bytes:
        """The labels a reviewer proposed (the encoded draft they proposed with)."""
        return self._request("GET", f"review/jobs/{job_id}/proposals/{proposal_id}/labels").content

    def statistics(self) -> list[dict[str, Any]]:
        """Decided review jobs of the datasets the caller may see (no UIDs)."""
        return list(self._json("GET", "review/statistics"))


def _error(method: str, path: str, url: str, response: requests.Response) -> MedImgError:
    """The error of a failed call: 404 and 403 as the DICOMweb client's (one ``except`` for both)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("error", response.text[:200]) if isinstance(body, dict) else ""
    message = f"{method} {path} failed with HTTP {status}: {detail}"
    if status == 409 and isinstance(body, dict) and isinstance(body.get("claim"), dict):
        return CaseClaimedError(message, claim=body["claim"], url=url)
    if status == 409:
        return ReviewConflictError(message, status=status, url=url)
    if status == 404:
        return NotFoundError(message + " (or not visible to you)", status=status, url=url)
    if status in (401, 403):
        return AccessDeniedError(message + " (check your role and dataset grants)", status=status, url=url)
    return PlatformAPIError(message, status=status, url=url)


def connect_platform(url: str | None = None, *, token: str | None = None,
                     session: requests.Session | None = None) -> PlatformClient:
    """Open the platform API; inside a platform user server no arguments are needed."""
    target = url or os.environ.get(PLATFORM_URL_ENV_VAR, "")
    if not target:
        raise ConfigurationError(f"connect_platform() needs a URL: pass url=... or set {PLATFORM_URL_ENV_VAR} "
                                 "(set automatically inside platform user servers)")
    if session is None:
        session = requests.Session()
        token = token if token is not None else os.environ.get(TOKEN_ENV_VAR)
        if token:
            session.headers["Authorization"] = f"token {token}"
    return PlatformClient(target, session)
