"""The Fleet gateway: the only door from the sites to the SuperLink.

Flower 1.41's SuperLink serves the Fleet API (``/v1/fleet/...``, what SuperNodes call), the
Control API (``/v1/control/...``: starts runs, registers nodes, no user authentication in
open-source Flower) and the runtime API (``/v1/runtime/...``) on one HTTP port, and cannot
split them (``federated/README.md``, "Security of a deployment"). So the SuperLink binds
127.0.0.1 and this small reverse proxy listens where the sites connect: it forwards a request
only when its raw request target is a plain Fleet path, and answers everything else 403 with a
fixed body, logged as method + path (escaped, cut) and the rule it broke; forwarded calls are
not logged (each SuperNode polls every few seconds).

What is forwarded
    ``POST`` to ``/v1/fleet/<name>[/<name>...]`` where every name is letters, digits, ``-`` or
    ``_`` — the only shape Flower's ``FleetHttpClient`` sends. The check runs on the raw target,
    before any decoding, so there is nothing to normalise: a query string, ``%``-escapes
    (``%2e%2e``, ``%2f``), ``.``/``..`` or empty segments, backslashes and absolute-form targets
    (``http://host/...``) are refused, never rewritten.
What is passed through
    Bodies stream both ways unchanged; every end-to-end header (``content-type``, ``accept``,
    Flower's node-authentication headers ``flwr-public-key``, ``flwr-signature``,
    ``flwr-timestamp``) goes through byte for byte, so the SuperLink still verifies each
    SuperNode's signature itself. Hop-by-hop headers (RFC 9110 §7.6.1, and those named in
    ``Connection``), ``Host`` and ``Expect`` are not forwarded.
TLS
    With ``--certfile``/``--keyfile`` the gateway serves HTTPS (the SuperLink's certificate from
    :mod:`medimg_hub.federation.pki`); with an ``https://`` upstream it verifies the SuperLink
    against ``--cafile``. TLS ends at the gateway; node authentication stays end to end.

Run it with ``python -m medimg_hub.federation.gateway --port P --upstream URL [...]``
(:class:`medimg_hub.federation.deployment.Federation` does, as a managed process).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from medimg_hub.servers.runner import LOG_FORMAT, stop_requested

log = logging.getLogger("medimg_hub.federation.gateway")  # also when run as __main__

#: The one request shape forwarded: Flower's Fleet calls (all ``POST``, no query).
FLEET_PATH = re.compile(r"/v1/fleet(?:/[A-Za-z0-9_-]+)+")
FORWARDED_METHODS = frozenset({"POST"})
#: The body of every refusal (fixed: it tells a caller nothing about what exists behind us).
REFUSED_BODY = "forbidden: only the Flower Fleet API is served here\n"
#: Not forwarded in either direction (RFC 9110 §7.6.1), plus ``Host`` (set for the upstream) and
#: ``Expect`` (the gateway answers ``100-continue`` itself).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade", "host", "expect"})
#: Seconds to connect to the SuperLink. There is no read timeout: the SuperLink answers or closes.
CONNECT_TIMEOUT_S = 10.0


def refusal_reason(method: str, raw_target: str) -> str | None:
    """Why a request may not pass, or None when it is a plain Fleet call.

    Parameters
    ----------
    method
        The request method.
    raw_target
        The request target exactly as received (not decoded, not normalised).
    """
    if method not in FORWARDED_METHODS:
        return f"method {method} is not forwarded"
    if not raw_target.startswith("/"):
        return "not an origin-form target"
    if "?" in raw_target or "#" in raw_target:
        return "query strings are not forwarded"
    if "%" in raw_target or "\\" in raw_target:
        return "escaped characters or backslashes"
    segments = raw_target.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments):
        return "empty or dot segments"
    if not FLEET_PATH.fullmatch(raw_target):
        return "not a Fleet API path"
    return None


def forwarded_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """``headers`` without hop-by-hop ones (also those the ``Connection`` header names); order and
    repeated headers kept, values untouched."""
    given = CIMultiDict(headers)
    named = {t.strip().lower() for v in given.getall("Connection", []) for t in v.split(",")}
    dropped = HOP_BY_HOP | named
    return CIMultiDict((k, v) for k, v in given.items() if k.lower() not in dropped)


def _printable(text: str, limit: int = 200) -> str:
    """A request target for a log line: escaped and cut (it is attacker-controlled)."""
    return ascii(text[:limit])


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and where it forwards.

    Attributes
    ----------
    host, port
        The address the sites connect to.
    upstream
        The SuperLink's base URL, e.g. ``https://127.0.0.1:9092``.
    certfile, keyfile
        Serve HTTPS with this certificate chain and key (PEM); None = plain HTTP.
    cafile
        CA bundle the upstream's certificate is verified against (``https`` upstreams).
    """

    host: str
    port: int
    upstream: str
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None

    def server_ssl(self) -> ssl.SSLContext | None:
        if self.certfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def upstream_ssl(self) -> ssl.SSLContext | bool:
        if not self.upstream.startswith("https://"):
            return False
        return ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)


class FleetGateway:
    """The proxy: :meth:`handle` answers one request (refuse, or forward and stream back)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.upstream = config.upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auto_decompress=False, trust_env=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                connector=aiohttp.TCPConnector(ssl=self.config.upstream_ssl(), limit=256))
        return self._session

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Forward a Fleet call to the SuperLink, or refuse it with 403."""
        reason = refusal_reason(request.method, request.raw_path)
        if reason is not None:
            log.warning("refused %s %s (%s)", request.method, _printable(request.raw_path), reason)
            return web.Response(status=403, text=REFUSED_BODY)
        try:
            upstream = await self._client().request(
                request.method, self.upstream + request.raw_path, headers=forwarded_headers(request.headers),
                data=request.content if request.body_exists else None, allow_redirects=False)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            log.error("SuperLink unreachable for %s %s: %s", request.method, request.raw_path, type(exc).__name__)
            return web.Response(status=502, text="bad gateway: the SuperLink did not answer\n")
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                          headers=forwarded_headers(upstream.headers))
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def serve(config: GatewayConfig, stop: Awaitable[None]) -> None:
    """Serve until ``stop`` completes (e.g. :func:`~medimg_hub.servers.runner.stop_requested`)."""
    gateway = FleetGateway(config)
    runner = web.ServerRunner(web.Server(gateway.handle, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=config.server_ssl())
    await site.start()
    log.info("Fleet gateway on %s://%s:%d -> %s", "https" if config.certfile else "http", config.host,
             config.port, gateway.upstream)
    try:
        await stop
    finally:
        await runner.cleanup()
        await gateway.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m medimg_hub.federation.gateway``: run the gateway until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="Address the sites connect to.")
    parser.add_argument("--port", type=int, required=True, help="Port the sites connect to.")
    parser.add_argument("--upstream", required=True, help="The SuperLink, e.g. https://127.0.0.1:9092.")
    parser.add_argument("--certfile", type=Path, help="Serve HTTPS with this certificate (PEM).")
    parser.add_argument("--keyfile", type=Path, help="The certificate's private key (PEM).")
    parser.add_argument("--cafile", type=Path, help="CA that signed the SuperLink's certificate.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config = GatewayConfig(args.host, args.port, args.upstream, args.certfile, args.keyfile, args.cafile)
    asyncio.run(serve(config, stop_requested()))


if __name__ == "__main__":
    main()


__all__ = ["FLEET_PATH", "REFUSED_BODY", "GatewayConfig", "FleetGateway", "refusal_reason", "forwarded_headers",
           "serve", "main"]
