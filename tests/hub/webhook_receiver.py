"""A real HTTP webhook receiver for the delivery tests, as a hospital's system would run one.

:class:`WebhookReceiver` listens on a loopback port in a thread (``start``/``stop``: between them the
port is closed, as for a receiver that is down). Each POST is checked like a careful receiver does
(the ``X-Medimg-Signature`` HMAC and its timestamp, the ``Idempotency-Key``) and answered per
``mode``: ``"ok"`` (200; a key seen before is acknowledged again but not acted on twice), ``"fail"``
(500) or ``"hang"`` (never answers until ``release()``). ``requests`` keeps every request;
``accepted`` the bodies acted on, one per idempotency key.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from medimg_hub.delivery.signing import SignatureError, verify_signature


@dataclass
class Received:
    """One request as it arrived."""

    key: str
    signature: str
    body: bytes
    verdict: str


@dataclass
class WebhookReceiver:
    secret: bytes
    port: int
    mode: str = "ok"
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrived: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/medimg"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, verdict = receiver.handle(self.headers.get("X-Medimg-Signature", ""),
                                                  self.headers.get("Idempotency-Key", ""), body)
                if status == 0:  # hang: hold the connection until released (or the server stops)
                    receiver._release.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(verdict.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def handle(self, signature: str, key: str, body: bytes) -> tuple[int, str]:
        with self._lock:
            try:
                verify_signature(self.secret, signature, body)
            except SignatureError as exc:
                verdict, status = f"refused: {exc.reason}", 401
            else:
                if self.mode == "fail":
                    verdict, status = "internal error", 500
                elif self.mode == "hang":
                    verdict, status = "hung", 0
                elif key in self.accepted:
                    verdict, status = "duplicate (acknowledged, not acted on)", 200
                else:
                    self.accepted[key] = json.loads(body)
                    verdict, status = "accepted", 200
            self.requests.append(Received(key, signature, body, verdict))
            self.arrived.set()
            return status, verdict

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
