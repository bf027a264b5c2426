"""The API's Prometheus metrics: request latency by route and outcome, requests by status,
requests forwarded to the leader, operations per batch. Labels are route templates and a few
fixed words, never raw paths, so their number is bounded by the route table.

Imports prometheus_client; nothing of aiohttp's request handling or the ledger.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["CONTENT_TYPE", "ApiMetrics", "outcome_of"]

#: The classic text format: every Prometheus version scrapes it.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_OPS_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

#: The route label of a request that matched no route.
UNMATCHED: Final = "unmatched"


def outcome_of(status: int) -> str:
    """ok, fail or unknown (STYLE: every call ends one of these); 504 is the only unknown."""
    if status < 300:
        return "ok"
    if status == 504:
        return "unknown"
    return "fail"


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.latency = Histogram(
            "budgetd_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and outcome (ok, fail, unknown).",
            ("method", "route", "outcome"),
            registry=registry,
            buckets=LATENCY_BUCKETS_S,
        )
        self.requests = Counter(
            "budgetd_http_requests",
            "HTTP requests answered, by route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.forwards = Counter(
            "budgetd_http_forwards",
            "Requests this follower sent on to the leader, by result: answered (the leader's "
            "answer relayed), unreachable (not sent: 503), broken (maybe sent: 503 for a GET, "
            "504 otherwise).",
            ("result",),
            registry=registry,
        )
        self.batch_ops = Histogram(
            "budgetd_http_batch_ops",
            "Operations per POST /v1/batch request that reached the log.",
            registry=registry,
            buckets=BATCH_OPS_BUCKETS,
        )
        #: The labelled latency histogram and request counter of each (method, route, status).
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # Label sets are bounded: methods and route templates are the router's, statuses
            # are the API's.
            children = (
                self.latency.labels(method, route, outcome_of(status)),
                self.requests.labels(method, route, str(status)),
            )
            self._children[key] = children
        latency, requests = children
        latency.observe(seconds)
        requests.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
