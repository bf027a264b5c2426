"""Real budgetd clusters for tests: separate `budgetd run` processes on 127.0.0.1
(budgetd.localcluster), with HTTP helpers.

Every process is started and stopped by its PID. Waits are bounded polls on a condition; no test
asserts on timing.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from budgetd.localcluster import LocalCluster

WAIT_S = 60.0


def until(condition: Callable[[], Any], what: str, limit_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Cluster(LocalCluster):
    """A LocalCluster with the HTTP helpers the tests use."""

    @classmethod
    def create(
        cls,
        root: Path,
        size: int = 3,
        *,
        extra: int = 0,
        raft: str = "",
        api: str = "",
        proposer: str = "",
        scheme: str = "http",
        ssl_context: ssl.SSLContext | None = None,
    ) -> Cluster:
        """``size`` members started now; ``extra`` more configured to join later. ``api``,
        ``proposer``: extra TOML lines of those tables; ``scheme`` https with ``ssl_context``
        for a cluster that serves TLS (the configs must name the certificates in ``api``)."""
        cluster = cls.on_free_ports(
            root, size, extra=extra, raft=raft, api=api, proposer=proposer, scheme=scheme
        )
        cluster.ssl_context = ssl_context
        assert isinstance(cluster, Cluster)
        for node in cluster.nodes[:size]:
            cluster.start(node.node_id)
        return cluster

    # HTTP ---------------------------------------------------------------------------------------

    def request(
        self,
        node_id: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        follow: bool = False,
        timeout_s: float = 10.0,
    ) -> Response:
        """One HTTP request to a node; with ``follow``, 307/308 redirects are followed with the
        same method and body (as curl -L does)."""
        url = self.node(node_id).url + path
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        opener = urllib.request.build_opener(
            NoRedirect(), urllib.request.HTTPSHandler(context=self.ssl_context)
        )
        for _ in range(5):
            request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
            try:
                with opener.open(request, timeout=timeout_s) as answer:
                    response = Response(answer.status, _decode(answer.read()), dict(answer.headers))
            except urllib.error.HTTPError as error:
                response = Response(error.code, _decode(error.read()), dict(error.headers))
            if not (follow and response.status in (307, 308) and "Location" in response.headers):
                return response
            url = response.headers["Location"]
        return response

    def cluster_view(self, node_id: str) -> dict[str, Any]:
        response = self.request(node_id, "GET", "/v1/cluster?digest=fresh", timeout_s=2)
        assert response.status == 200, response
        return dict(response.body)

    def leader(self, among: list[str] | None = None) -> str:
        """Wait until the running nodes agree on one leader; its id."""
        candidates = among or [n.node_id for n in self.nodes if n.running]

        def agreed() -> str | None:
            views = [self.cluster_view(node_id) for node_id in candidates]
            leaders = {view.get("leader_id") for view in views}
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                if leader in candidates:
                    return str(leader)
            return None

        return str(until(agreed, f"one leader among {candidates}"))

    def wait_converged(self, node_ids: list[str] | None = None) -> str:
        """Wait until the nodes report the same applied index and digest; the digest."""
        ids = node_ids or [n.node_id for n in self.nodes if n.running]

        def same() -> str | None:
            views = [self.cluster_view(node_id) for node_id in ids]
            digests = {view["digest"] for view in views}
            applied = {view["applied_index"] for view in views}
            if len(digests) == 1 and len(applied) == 1:
                return str(digests.pop())
            return None

        return str(until(same, f"nodes {ids} to converge"))


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def running_cluster(
    root: Path, request: pytest.FixtureRequest, **options: Any
) -> Iterator[Cluster]:
    """A cluster made with ``Cluster.create(root, **options)``; stops every node after the test
    and prints the nodes' logs when the test failed."""
    cluster = Cluster.create(root, **options)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())
