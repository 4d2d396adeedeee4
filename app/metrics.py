"""Prometheus metrics of one app instance, in its own registry (tests build many apps per process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "HTTP requests answered, by route template and status.", ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Time from request to the end of the answer.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("translate_queue_depth", "Texts waiting to join a decoding batch.", registry=r)
        self.in_flight = Gauge(
            "translate_in_flight", "Texts admitted and not yet answered (bounded by MAX_QUEUE).", registry=r
        )
        self.batch_size = Histogram(
            "translate_batch_size", "Texts per decoded batch (beam search, and greedy without continuous batching).",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.continuous_rows = Histogram(
            "translate_continuous_rows", "Texts in each decoder step of the continuous greedy batch.",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.batch_seconds = Histogram(
            "translate_batch_seconds", "Time to decode one batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.tokens_generated = Counter(
            "translate_tokens_generated", "Tokens generated, </s> included.", ["model", "direction"], registry=r
        )
        self.rejected = Counter(
            "translate_rejected", "Requests refused: queue full, timed out or over the rate limit.", ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
