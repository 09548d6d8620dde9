"""Prometheus metrics of the platform API, in a registry of its own (no process-wide globals).

``platform_api_requests_total{route, outcome}``, ``platform_api_request_seconds{route}`` and
``platform_api_bytes_total{direction}`` (``out``: bytes streamed to callers by WADO-RS,
``in``: bytes received by STOW-RS). Labels never hold user names or UIDs.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

#: Latency buckets in seconds (1 ms … 60 s: QIDO is milliseconds, a series retrieval seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PlatformMetrics:
    """The service's counters and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("platform_api_requests", "Requests by route and outcome",
                                ("route", "outcome"), registry=self.registry)
        self.latency = Histogram("platform_api_request_seconds", "Request latency by route", ("route",),
                                 buckets=BUCKETS, registry=self.registry)
        self.bytes = Counter("platform_api_bytes", "Bytes streamed, by direction", ("direction",),
                             registry=self.registry)

    def observe(self, route: str, outcome: str, seconds: float, bytes_out: int = 0, bytes_in: int = 0) -> None:
        """Count one finished request."""
        self.requests.labels(route, outcome).inc()
        self.latency.labels(route).observe(seconds)
        if bytes_out:
            self.bytes.labels("out").inc(bytes_out)
        if bytes_in:
            self.bytes.labels("in").inc(bytes_in)

    def exposition(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
