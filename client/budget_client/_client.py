"""The async client for the whole budgetd HTTP API (DESIGN §5): leader discovery, bounded retries
with the same idempotency key, typed results.

Owns endpoints, the remembered leader, idempotency keys and the retry loop. Imports aiohttp (via
the transport) and msgpack (via the codec) only; never budgetd.
"""

from __future__ import annotations

import asyncio
import itertools
import random as _random
import secrets
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from ._codec import Codec, codec_for
from ._errors import ClientClosed, OutcomeUnknown, Refused, Unavailable
from ._results import Committed, Granted, Released, Spent, result_for
from ._transport import AiohttpTransport, RawResponse, Transport, TransportError

__all__ = ["AsyncClient", "BatchResult", "RetryPolicy"]

LEADER_HEADER: Final = "X-Budgetd-Leader"
#: Idempotency keys are 1-128 printable ASCII characters (openapi.json).
KEY_LENGTH_MAX: Final = 128
#: Hard ceilings checked when a RetryPolicy is made: no setting may loop without bound.
ATTEMPTS_MAX_LIMIT: Final = 100
REDIRECTS_MAX_LIMIT: Final = 10

BatchResult = Granted | Committed | Released | Spent | Refused | OutcomeUnknown
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of one call. Attempt n (from 0) that fails retryably waits
    ``random() × min(backoff_max_s, backoff_base_s × 2**n)`` (full jitter) before the next,
    within ``attempts_max`` attempts and ``deadline_s`` overall. Following a not_leader hint is
    not an attempt: up to ``redirects_max`` hops each."""

    attempts_max: int = 6
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    deadline_s: float = 10.0
    attempt_timeout_s: float = 3.0
    redirects_max: int = 3

    def __post_init__(self) -> None:
        assert 1 <= self.attempts_max <= ATTEMPTS_MAX_LIMIT, self.attempts_max
        assert 0 <= self.redirects_max <= REDIRECTS_MAX_LIMIT, self.redirects_max
        assert 0 <= self.backoff_base_s <= self.backoff_max_s, self
        assert self.deadline_s > 0 and self.attempt_timeout_s > 0, self

    def backoff_s(self, attempt: int, draw: float) -> float:
        return float(draw * min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt))


def base_url(address: str, *, scheme: str = "http") -> str:
    """``host:port`` or a URL → ``scheme://host:port`` (no trailing slash, no path); a bare
    ``host:port`` gets ``scheme``."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = f"{scheme}://{address}"
    parts = urlsplit(address)
    return f"{parts.scheme}://{parts.netloc}"


class AsyncClient:
    """An async client of a budgetd cluster.

    ``endpoints``: some or all nodes (``host:port`` or URLs). Every request carries
    ``Prefer: redirect`` so a follower answers with the leader's address instead of proxying; the
    client remembers the leader, and forgets it after a failure (then it tries the endpoints in
    turn). Every mutating call carries an idempotency key — the one given, else a generated one —
    and only retryable failures (503 unavailable, 429 rate_limited, 408 request_timeout, 504
    outcome_unknown, connection errors) are retried, always with the same key. Calls return typed
    results or raise the tree in ``budget_client``'s docstring.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        token: str,
        *,
        wire: str = "msgpack",
        retry: RetryPolicy | None = None,
        transport: Transport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        random: Random = _random.random,
        key_prefix: str | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        """``ssl``: how to speak HTTPS to the nodes (see `tls_context`); with it, or with an
        https endpoint, a bare ``host:port`` endpoint or leader hint means https. Not with
        ``transport``."""
        if not endpoints:
            raise ValueError("at least one endpoint")
        if ssl is not None and transport is not None:
            raise ValueError("give ssl to the transport, not beside it")
        https = ssl is not None or any(e.strip().startswith("https://") for e in endpoints)
        self._scheme = "https" if https else "http"
        self._endpoints = [base_url(e, scheme=self._scheme) for e in endpoints]
        self._token = token
        self._codec: Codec = codec_for(wire)
        self.retry = retry or RetryPolicy()
        self._transport: Transport = transport or AiohttpTransport(ssl=ssl)
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self._key_prefix = key_prefix or secrets.token_hex(6)
        assert len(self._key_prefix) <= 64, "key_prefix is at most 64 characters"
        self._keys = itertools.count(1)
        self._leader: str | None = None
        self._next_endpoint = 0
        self._closed = False
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": self._codec.content_type,
            "Prefer": "redirect",
        }

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        await self._transport.close()

    @property
    def leader(self) -> str | None:
        """The leader's base URL as last learned, or None."""
        return self._leader

    def new_key(self) -> str:
        """A fresh idempotency key, unique to this client instance."""
        return f"{self._key_prefix}-{next(self._keys)}"

    # -- campaigns and reads --------------------------------------------------------------------

    async def put_campaign(
        self,
        campaign_id: str,
        settings: Mapping[str, Any],
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {} if if_match is None else {"If-Match": f'"{if_match}"'}
        body = await self._call(
            "PUT",
            f"/v1/campaigns/{quote(campaign_id, safe=':')}",
            dict(settings),
            key=idempotency_key,
            mutating=True,
            extra_headers=headers,
        )
        return dict(body)

    async def get_campaign(
        self, campaign_id: str, *, consistency: str = "strong"
    ) -> dict[str, Any]:
        path = f"/v1/campaigns/{quote(campaign_id, safe=':')}?consistency={consistency}"
        return dict(await self._call("GET", path, leader_only=consistency == "strong"))

    async def list_campaigns(
        self,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int | None = None,
        consistency: str = "strong",
    ) -> dict[str, Any]:
        query: dict[str, Any] = {"prefix": prefix, "consistency": consistency}
        if after is not None:
            query["after"] = after
        if limit is not None:
            query["limit"] = limit
        path = "/v1/campaigns?" + urlencode(query)
        return dict(await self._call("GET", path, leader_only=consistency == "strong"))

    async def get_reservation(
        self, reservation_id: int, *, consistency: str = "strong"
    ) -> dict[str, Any]:
        path = f"/v1/reservations/{int(reservation_id)}?consistency={consistency}"
        return dict(await self._call("GET", path, leader_only=consistency == "strong"))

    async def cluster_status(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/v1/cluster", leader_only=False))

    # -- money ----------------------------------------------------------------------------------

    async def reserve(
        self,
        campaign_id: str,
        amount_micros: int,
        *,
        ttl_ms: int,
        bidder_id: str,
        min_amount_micros: int | None = None,
        idempotency_key: str | None = None,
    ) -> Granted:
        body: dict[str, Any] = {
            "campaign_id": campaign_id,
            "amount_micros": amount_micros,
            "ttl_ms": ttl_ms,
            "bidder_id": bidder_id,
        }
        if min_amount_micros is not None:
            body["min_amount_micros"] = min_amount_micros
        answer = await self._call(
            "POST", "/v1/reservations", body, key=idempotency_key, mutating=True
        )
        result = result_for("reserve", answer)
        assert isinstance(result, Granted)
        return result

    async def commit(
        self,
        reservation_id: int,
        amount_micros: int,
        *,
        final: bool = False,
        idempotency_key: str | None = None,
    ) -> Committed:
        body: dict[str, Any] = {"amount_micros": amount_micros}
        if final:
            body["final"] = True
        path = f"/v1/reservations/{int(reservation_id)}/commit"
        answer = await self._call("POST", path, body, key=idempotency_key, mutating=True)
        result = result_for("commit", {"reservation_id": reservation_id, **answer})
        assert isinstance(result, Committed)
        return result

    async def release(self, reservation_id: int, *, idempotency_key: str | None = None) -> Released:
        path = f"/v1/reservations/{int(reservation_id)}/release"
        answer = await self._call("POST", path, {}, key=idempotency_key, mutating=True)
        result = result_for("release", {"reservation_id": reservation_id, **answer})
        assert isinstance(result, Released)
        return result

    async def record_spend(
        self,
        campaign_id: str,
        amount_micros: int,
        *,
        bidder_id: str,
        idempotency_key: str | None = None,
    ) -> Spent:
        """Direct spend, never refused for budget: the late billing notice whose slice is gone.
        Pass the billing id (or a key derived from it) so a repeated notice counts once."""
        path = f"/v1/campaigns/{quote(campaign_id, safe=':')}/spend"
        body = {"amount_micros": amount_micros, "bidder_id": bidder_id}
        answer = await self._call("POST", path, body, key=idempotency_key, mutating=True)
        result = result_for("spend", {"campaign_id": campaign_id, **answer})
        assert isinstance(result, Spent)
        return result

    async def batch(
        self, ops: Sequence[Mapping[str, Any]], *, retry: RetryPolicy | None = None
    ) -> list[BatchResult]:
        """Up to the server's ``batch_ops_max`` (1000) ops in one round trip and one log entry.

        Each op is a mapping with ``op`` (reserve, commit, release, spend) and that op's fields;
        an op without ``idempotency_key`` gets a generated one (written into the sent copy only —
        pass keys yourself if you may need to resend). One result per op, in order: the typed
        result, or a Refused / OutcomeUnknown *value* (not raised). A failure of the whole batch
        raises like any call; every op is then unknown, retry-safe with the same keys.
        """
        sent = [
            dict(op) if "idempotency_key" in op else {**op, "idempotency_key": self.new_key()}
            for op in ops
        ]
        answer = await self._call("POST", "/v1/batch", {"ops": sent}, mutating=True, retry=retry)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(sent):
            raise OutcomeUnknown(f"batch answer does not match its {len(sent)} ops: {answer!r}")
        out: list[BatchResult] = []
        for op, item in zip(sent, results, strict=True):
            out.append(_op_outcome(op, item))
        return out

    # -- the retry loop -------------------------------------------------------------------------

    def _target(self) -> str:
        if self._leader is not None:
            return self._leader
        url = self._endpoints[self._next_endpoint % len(self._endpoints)]
        self._next_endpoint += 1
        return url

    def _forget(self, url: str) -> None:
        if self._leader == url:
            self._leader = None

    def _learn(self, hint: str | None) -> str | None:
        if hint:
            self._leader = base_url(hint, scheme=self._scheme)
        return self._leader

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        mutating: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        leader_only: bool = True,
    ) -> Any:
        """One call: the decoded 2xx body. ``leader_only``: only the leader answers it with a 2xx
        itself (writes, strong reads), so a 2xx without a leader header names the leader."""
        if self._closed:
            raise ClientClosed("the client is closed")
        policy = retry or self.retry
        headers = dict(self._headers)
        if extra_headers:
            headers.update(extra_headers)
        payload = None
        if body is not None:
            payload = self._codec.encode(body)
            headers["Content-Type"] = self._codec.content_type
        if mutating and path != "/v1/batch":
            key = key or self.new_key()
            if not 1 <= len(key) <= KEY_LENGTH_MAX:
                raise ValueError(f"an idempotency key is 1-{KEY_LENGTH_MAX} characters: {key!r}")
            headers["Idempotency-Key"] = key
        deadline = self._clock() + policy.deadline_s
        maybe_written = False
        last = "no attempt made"
        attempts = 0
        for attempt in range(policy.attempts_max):
            attempts = attempt + 1
            url = self._target()
            for _hop in range(policy.redirects_max + 1):
                timeout_s = min(policy.attempt_timeout_s, deadline - self._clock())
                if timeout_s <= 0:
                    last = f"deadline of {policy.deadline_s} s passed; last: {last}"
                    break
                try:
                    response = await self._transport.send(
                        method, url + path, headers=headers, body=payload, timeout_s=timeout_s
                    )
                except TransportError as error:
                    maybe_written = maybe_written or (mutating and error.sent)
                    self._forget(url)
                    last = str(error)
                    break
                outcome = self._judge(response, url, leader_only=leader_only)
                if outcome is None:  # 2xx
                    return Codec.decode(response.headers.get("Content-Type", ""), response.body)
                kind, detail, hint = outcome
                last = detail
                if kind == "redirect":
                    url = hint or url
                    continue
                if kind == "unknown":
                    maybe_written = maybe_written or mutating
                self._forget(url)
                break
            else:
                last = f"more than {policy.redirects_max} not_leader hops; last: {last}"
            if attempt + 1 >= policy.attempts_max:
                break
            delay_s = policy.backoff_s(attempt, self._random())
            if self._clock() + delay_s >= deadline:
                last = f"deadline of {policy.deadline_s} s would pass; last: {last}"
                break
            await self._sleep(delay_s)
        error_type = OutcomeUnknown if maybe_written else Unavailable
        raise error_type(
            f"{method} {path}: gave up after {attempts} attempt(s): {last}",
            idempotency_key=headers.get("Idempotency-Key"),
            attempts=attempts,
        )

    def _judge(
        self, response: RawResponse, url: str, *, leader_only: bool
    ) -> tuple[str, str, str | None] | None:
        """None for a 2xx; else (redirect | unavailable | unknown, detail, leader url), or raises
        Refused / OutcomeUnknown for answers that must not be retried."""
        status = response.status
        hint = response.headers.get(LEADER_HEADER)
        if 200 <= status < 300:
            if hint:
                self._learn(hint)
            elif leader_only and self._leader is None:
                self._leader = url  # it answered a leader-only request itself
            return None
        try:
            problem = Codec.decode(response.headers.get("Content-Type", ""), response.body)
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {}
        code = str(problem.get("code") or f"http_{status}")
        detail = f"{status} {code} from {url}: {problem.get('detail', '')}"
        if status in (307, 308, 421) or code == "not_leader":
            location = response.headers.get("Location")
            leader_hint = hint or problem.get("leader") or location
            leader = self._learn(str(leader_hint)) if leader_hint else None
            return ("redirect", detail, leader)
        if status in (408, 429, 503) or code in ("unavailable", "rate_limited", "request_timeout"):
            # Nothing was written: a node busy or short of quorum, the token over its rate, a
            # body that arrived too slowly. Retried after a backoff, with the same key.
            return ("unavailable", detail, None)
        if status == 504 or code == "outcome_unknown":
            return ("unknown", detail, None)
        if status >= 500:
            raise OutcomeUnknown(detail)
        raise Refused(code, str(problem.get("detail", "")), status=status, problem=problem)


def _op_outcome(op: Mapping[str, Any], item: Any) -> BatchResult:
    if not isinstance(item, dict):
        key = str(op["idempotency_key"])
        return OutcomeUnknown(f"unreadable batch result {item!r}", idempotency_key=key)
    code = item.get("code")
    if code == "ok":
        if op["op"] == "commit":  # the bulk of a wallet's batches: no copy of the answer
            return Committed(
                int(item.get("reservation_id", op["reservation_id"])),
                int(item["committed_micros"]),
                int(item["remaining_micros"]),
                bool(item["late"]),
                int(item["overspend_micros"]),
                bool(item.get("replayed", False)),
            )
        filled = dict(item)
        if op["op"] in ("commit", "release"):
            filled.setdefault("reservation_id", op["reservation_id"])
        if op["op"] == "spend":
            filled.setdefault("campaign_id", op["campaign_id"])
        return result_for(str(op["op"]), filled)
    detail = str(item.get("detail", ""))
    if item.get("retryable"):
        return OutcomeUnknown(f"{code}: {detail}", idempotency_key=str(op["idempotency_key"]))
    return Refused(str(code), detail, status=int(item.get("status", 0) or 0), problem=item)
