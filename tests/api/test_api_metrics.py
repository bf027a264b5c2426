"""GET /metrics: Prometheus text with request latency by route template and outcome, and
requests by status, with labels bounded by the route table (never raw paths)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from budgetd.api import ROUTES
from budgetd.service import OutcomeUnknown

pytestmark = pytest.mark.usefixtures("seeded")


async def _samples(api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_requests_by_route_template_status_and_outcome(api, service, make_reservation):
    rid = make_reservation()
    for campaign_id in ("acme", "acme:summer", "globex", "nobody"):
        await api.call("GET", f"/v1/campaigns/{campaign_id}", token="reader")
    await api.call("POST", f"/v1/reservations/{rid}/commit", {"amount_micros": 1}, key="k")
    service.submit_error = OutcomeUnknown("timeout")
    await api.call("POST", f"/v1/reservations/{rid}/commit", {"amount_micros": 1}, key="j")
    for index in range(5):
        await api.call("GET", f"/no/such/path/{index}")
    await api.call("PATCH", "/v1/campaigns/acme")

    samples = await _samples(api)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    campaign = {"method": "GET", "route": "/v1/campaigns/{id}"}
    assert value("budgetd_http_requests_total", **campaign, status="200") == 3
    assert value("budgetd_http_requests_total", **campaign, status="404") == 1
    assert value("budgetd_http_request_duration_seconds_count", **campaign, outcome="ok") == 3
    assert value("budgetd_http_request_duration_seconds_count", **campaign, outcome="fail") == 1
    commit = {"method": "POST", "route": "/v1/reservations/{rid}/commit"}
    assert value("budgetd_http_requests_total", **commit, status="504") == 1
    assert value("budgetd_http_request_duration_seconds_count", **commit, outcome="unknown") == 1
    unmatched = {"method": "other", "route": "unmatched"}
    assert value("budgetd_http_requests_total", **unmatched, status="404") == 5
    assert value("budgetd_http_requests_total", **unmatched, status="405") == 1

    routes = {dict(labels)["route"] for _, labels in samples if "route" in dict(labels)}
    assert routes <= {route.path for route in ROUTES} | {"unmatched"}, "a raw path as a label"


async def test_batch_sizes(api, make_reservation):
    rids = [make_reservation() for _ in range(3)]
    ops = [{"op": "release", "idempotency_key": f"r{rid}", "reservation_id": rid} for rid in rids]
    assert (await api.call("POST", "/v1/batch", {"ops": ops})).status == 200
    samples = await _samples(api)
    assert samples[("budgetd_http_batch_ops_count", ())] == 1
    assert samples[("budgetd_http_batch_ops_sum", ())] == 3


async def test_a_shared_registry(service, settings, tokens):
    from aiohttp.test_utils import TestClient, TestServer

    from budgetd.api import make_app

    registry = CollectorRegistry()
    app = make_app(service, settings, tokens, registry=registry)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
    assert (
        registry.get_sample_value(
            "budgetd_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
        )
        == 1
    )
