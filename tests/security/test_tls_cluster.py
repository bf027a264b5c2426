"""A real 3-node cluster serving HTTPS with client certificates required: writes sent to a
follower are forwarded to the leader over TLS (the follower presents its own certificate), the
CLI speaks HTTPS with --cacert/--cert/--cert-key, budget_client with ssl=; a client without a
certificate is refused; a node on a non-loopback address refuses to start on plain HTTP."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from budget_client import AsyncClient, Refused, tls_context
from budgetd.localcluster import local_config
from tests.cluster.harness import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
ROOT = {
    "currency": "USD",
    "timezone": "UTC",
    "daily_budget_micros": 100_000_000,
    "pacing": {"mode": "asap"},
    "status": "active",
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [str(REPO / "scripts" / "make-test-ca"), str(directory)], check=True, capture_output=True
    )
    return directory


def _context(ca: Path, *, certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    if certificate:
        context.load_cert_chain(str(ca / "client.pem"), str(ca / "client-key.pem"))
    return context


@pytest.fixture
def cluster(tmp_path: Path, ca: Path) -> Iterator[Cluster]:
    api = "\n".join(
        [
            f'tls_cert_file = "{ca / "server.pem"}"',
            f'tls_key_file = "{ca / "server-key.pem"}"',
            f'tls_client_ca_file = "{ca / "ca.pem"}"',
            f'tls_ca_file = "{ca / "ca.pem"}"',
        ]
    )
    cluster = Cluster.create(
        tmp_path / "cluster", 3, api=api, scheme="https", ssl_context=_context(ca)
    )
    try:
        assert cluster.wait_ready(60) == [], cluster.logs()
        yield cluster
    finally:
        cluster.stop_all()


def _cli(cluster: Cluster, ca: Path, node_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetd", *args, "--url", cluster.node(node_id).url, "--json"],
        env={
            "BUDGETD_TOKEN": cluster.token,
            "BUDGETD_CACERT": str(ca / "ca.pem"),
            "BUDGETD_CERT": str(ca / "client.pem"),
            "BUDGETD_CERT_KEY": str(ca / "client-key.pem"),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_forwarding_cli_and_client_over_tls_with_client_certificates(
    cluster: Cluster, ca: Path
) -> None:
    leader = cluster.leader()
    follower = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    assert cluster.node(follower).url.startswith("https://")
    # A write at a follower is forwarded to the leader over TLS, with the follower's certificate.
    created = cluster.request(follower, "PUT", "/v1/campaigns/acme", ROOT)
    assert created.status == 201, created
    assert created.headers["X-Budgetd-Leader"] == cluster.node(leader).http_address
    # A 307 names the leader with https.
    redirect = cluster.request(
        follower, "GET", "/v1/campaigns/acme", headers={"Prefer": "redirect"}
    )
    assert redirect.status == 307 and redirect.headers["Location"].startswith("https://")

    shown = _cli(cluster, ca, follower, "campaign", "get", "acme")
    assert shown.returncode == 0, shown.stderr
    assert '"campaign_id": "acme"' in shown.stdout
    without = subprocess.run(
        [
            sys.executable,
            "-m",
            "budgetd",
            "campaign",
            "get",
            "acme",
            "--url",
            cluster.node(follower).url,
            "--token",
            cluster.token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without.returncode != 0
    assert len(without.stderr.strip().splitlines()) == 1, without.stderr

    async def bidder() -> int:
        endpoints = [n.http_address for n in cluster.nodes]  # bare host:port: https via ssl=
        context = tls_context(
            str(ca / "ca.pem"), certfile=str(ca / "client.pem"), keyfile=str(ca / "client-key.pem")
        )
        async with AsyncClient(endpoints, cluster.token, ssl=context) as client:
            granted = await client.reserve("acme", 1_000_000, ttl_ms=30_000, bidder_id="b1")
            await client.commit(granted.reservation_id, 400_000, final=True)
            with pytest.raises(Refused):
                await client.reserve("nope", 1, ttl_ms=30_000, bidder_id="b1")
            return granted.granted_micros

    assert asyncio.run(bidder()) == 1_000_000
    cluster.wait_converged()


def test_a_client_without_a_certificate_is_refused(cluster: Cluster, ca: Path) -> None:
    cluster.ssl_context = _context(ca, certificate=False)
    node_id = cluster.nodes[0].node_id
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        cluster.request(node_id, "GET", "/healthz")


def test_plain_http_on_a_non_loopback_address_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "cluster-secret").write_text("s3cret\n")
    config = tmp_path / "n1.toml"
    config.write_text(local_config("n1", [("n1", "127.0.0.1:7080", "10.77.0.1:8080")]))
    done = subprocess.run(
        [sys.executable, "-m", "budgetd", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing plain HTTP on 10.77.0.1" in lines[0], done.stderr
    assert not (tmp_path / "n1").exists()  # refused before touching the data directory
