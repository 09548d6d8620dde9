"""Where a browser request comes from: the checks that keep cookie-authenticated pages of the
platform's services (the MLflow proxy, the datasets admin page) safe from other sites' pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from tornado.httputil import HTTPHeaders


def same_origin(headers: HTTPHeaders, host: str) -> bool:
    """Whether the browser says the request comes from the page's own origin.

    ``Sec-Fetch-Site`` (set by the browser, not by scripts) decides when present; otherwise an
    ``Origin`` header whose host and port equal the request's ``Host``.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc == host


def is_navigation(method: str, headers: HTTPHeaders) -> bool:
    """A browser loading a page (redirected to the login) rather than a script (answered 403)."""
    if method not in ("GET", "HEAD"):
        return False
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in headers.get("Accept", "")


__all__ = ["is_navigation", "same_origin"]
