"""Rotating a token without a restart: the app reads the tokens file again when it changes; the
old token is refused (401) and the new one accepted. A broken new file keeps the tokens in force
and logs one error, not one per check."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from budgetd.api import TokenEntry, Tokens, TokensFile, make_app
from tests.api.conftest import Harness

OLD, NEW = "old-admin-token", "new-admin-token"
WAIT_S = 20.0


def _write(path: Path, *entries: TokenEntry) -> None:
    path.write_text(Tokens.render_file(list(entries)))


def _admin(name: str, token: str) -> TokenEntry:
    return TokenEntry.from_plaintext(name, token, roles=["admin"])


@pytest.fixture
def tokens_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    _write(path, _admin("ops", OLD))
    return path


@pytest.fixture
async def watched(service, settings, tokens_path) -> AsyncIterator[Harness]:
    app = make_app(service, replace(settings, tokens_reload_ms=20), TokensFile.load(tokens_path))
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, service)


async def _status(api: Harness, token: str) -> int:
    return (await api.call("GET", "/v1/cluster", token=token)).status


async def _until(api: Harness, token: str, status: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await _status(api, token) == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"token {token!r} never got {status}")


async def test_a_rotated_token_takes_effect_without_a_restart(watched, tokens_path) -> None:
    assert await _status(watched, OLD) == 200
    assert await _status(watched, NEW) == 401
    # Step 1: both tokens; step 2: the new one only.
    _write(tokens_path, _admin("ops", OLD), _admin("ops-next", NEW))
    await _until(watched, NEW, 200)
    assert await _status(watched, OLD) == 200
    _write(tokens_path, _admin("ops-next", NEW))
    await _until(watched, OLD, 401)
    assert await _status(watched, NEW) == 200


async def test_a_broken_file_keeps_the_tokens_in_force_and_logs_one_error(
    watched, tokens_path, caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="budgetd.api")
    tokens_path.write_text('[[token]]\nname = "ops"\nsha256 = "not hex"\nroles = ["admin"]\n')
    deadline = time.monotonic() + WAIT_S
    while not caplog.records and time.monotonic() < deadline:
        assert await _status(watched, OLD) == 200
    [record] = caplog.records
    assert "not reloaded" in record.getMessage() and "sha256" in record.getMessage()
    for _ in range(10):  # many checks of the same broken file: no further error
        assert await _status(watched, OLD) == 200
    tokens_path.touch()
    assert await _status(watched, OLD) == 200
    assert len(caplog.records) == 1
    # A file that cannot be read at all, then a good one again.
    tokens_path.unlink()
    assert await _status(watched, OLD) == 200
    _write(tokens_path, _admin("ops-next", NEW))
    await _until(watched, NEW, 200)
    assert await _status(watched, OLD) == 401


def test_reload_is_forced_and_check_only_reads_a_changed_file(tokens_path) -> None:
    watched = TokensFile.load(tokens_path)
    assert not watched.check()  # unchanged
    tokens_path.touch()
    assert not watched.check()  # touched, same content: the same tokens stay
    _write(tokens_path, _admin("ops-next", NEW))
    assert watched.check() and watched.tokens.authenticate(NEW) is not None
    assert watched.reload()  # SIGHUP: always read
    fixed = TokensFile(Tokens([]))
    assert not fixed.check() and not fixed.reload()
