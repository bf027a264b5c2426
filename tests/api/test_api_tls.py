"""HTTPS on the API's real socket (`start_api`): a round trip verified against the test CA; with
api.tls_client_ca_file, no client certificate or one from another CA is refused in the handshake,
and the right one is accepted; TLS 1.2 at least."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from budgetd.api import make_app, server_ssl_context, start_api
from tests.api.conftest import TOKENS

REPO = Path(__file__).resolve().parents[2]


def make_ca(directory: Path, name: str = "budgetd test CA") -> Path:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_test_ca.py"), str(directory), "--name", name],
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca(tmp_path_factory.mktemp("other-ca"), "someone else's CA")


def client_context(ca: Path, cert_dir: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    if cert_dir is not None:
        context.load_cert_chain(str(cert_dir / "client.pem"), str(cert_dir / "client-key.pem"))
    return context


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve_tls(service, settings, tokens, ca) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(*, client_ca: bool, header_timeout_ms: int = 30_000) -> str:
        api = replace(
            settings,
            header_timeout_ms=header_timeout_ms,
            tls_cert_file=str(ca / "server.pem"),
            tls_key_file=str(ca / "server-key.pem"),
            tls_client_ca_file=str(ca / "ca.pem") if client_ca else None,
        )
        runner, site = await start_api(make_app(service, api, tokens), api, "127.0.0.1", 0)
        runners.append(runner)
        return f"https://127.0.0.1:{site.bound_port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _get(url: str, context: ssl.SSLContext | bool) -> int:
    headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(url + "/v1/cluster", headers=headers) as response,
    ):
        await response.read()
        return response.status


async def test_an_https_round_trip(serve_tls, ca, other_ca) -> None:
    url = await serve_tls(client_ca=False)
    assert await _get(url, client_context(ca)) == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get(url, client_context(other_ca))  # the server's certificate is not trusted
    with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port gets no answer
        await _get(url.replace("https://", "http://"), False)


async def test_client_certificates_are_required_when_a_client_ca_is_set(
    serve_tls, ca, other_ca
) -> None:
    url = await serve_tls(client_ca=True)
    assert await _get(url, client_context(ca, ca)) == 200
    for context in (client_context(ca), client_context(ca, other_ca)):
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await _get(url, context)


def test_tls_below_1_2_is_not_offered(settings, ca) -> None:
    api = replace(
        settings, tls_cert_file=str(ca / "server.pem"), tls_key_file=str(ca / "server-key.pem")
    )
    context = server_ssl_context(api)
    assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server_ssl_context(settings) is None


async def test_a_client_that_never_finishes_the_handshake_is_dropped(serve_tls) -> None:
    url = await serve_tls(client_ca=False, header_timeout_ms=300)
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
        assert await asyncio.wait_for(reader.read(), 20) == b""
    finally:
        writer.close()
