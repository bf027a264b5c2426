"""budgetd/api/openapi.json: the same routes as the app, fresh (regenerated from the schemas),
self-consistent, and served. The harness in conftest.py also checks every response of every test
against it."""

from __future__ import annotations

import json
from typing import Any

from budgetd.api import PROBLEMS, ROUTES, Tokens, make_app
from budgetd.api._openapi import PATH, main, render
from budgetd.settings import ApiSettings

_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _document() -> dict[str, Any]:
    return json.loads(PATH.read_text(encoding="utf-8"))


def test_the_apps_routes_and_the_documents_paths_agree_exactly(service):
    app = make_app(service, ApiSettings(), Tokens.empty())
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, item in _document()["paths"].items()
        for method in item
        if method in _METHODS
    }
    assert served == documented
    assert {(route.method, route.path) for route in ROUTES} == served


def test_the_committed_document_is_fresh():
    assert PATH.read_text(encoding="utf-8") == render(), (
        "budgetd/api/openapi.json is stale: run python -m budgetd.api._openapi"
    )
    assert main(["--check"]) == 0


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_every_reference_resolves_and_every_operation_is_complete():
    doc = _document()
    assert doc["openapi"].startswith("3.1")
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, ref
            node = node[part]
    problem_statuses = {kind.status for kind in PROBLEMS.values()}
    operation_ids = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            operation_ids.append(operation["operationId"])
            statuses = {int(status) for status in operation["responses"]}
            assert any(200 <= status < 300 for status in statuses), (method, path)
            assert {s for s in statuses if s >= 300} <= problem_statuses, (method, path)
            public = operation.get("security") == []
            assert public is (path in ("/healthz", "/readyz", "/metrics", "/openapi.json"))
            if not public:
                assert {401, 400, 500} <= statuses, (method, path)
            if method in ("put", "post"):
                assert set(operation["requestBody"]["content"]) == {
                    "application/json",
                    "application/msgpack",
                }
    assert len(operation_ids) == len(set(operation_ids))


def test_every_problem_status_has_a_shared_response():
    responses = _document()["components"]["responses"]
    assert {f"Problem{kind.status}" for kind in PROBLEMS.values()} == set(responses)


async def test_the_served_document_is_the_committed_file(api):
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    assert await response.read() == PATH.read_bytes()
