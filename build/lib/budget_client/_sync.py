"""The thin synchronous facade: AsyncClient's calls from plain threads.

Owns one event loop on a private daemon thread; every call is run there and waited for. Imports
this package only; never budgetd.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from ._client import AsyncClient, BatchResult, RetryPolicy
from ._results import Committed, Granted, Released, Spent

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Blocking twin of AsyncClient (same arguments, same methods, same errors). Not for use from
    inside a running event loop — use AsyncClient there. Close it when done."""

    def __init__(self, endpoints: Sequence[str], token: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="budget_client", daemon=True
        )
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(endpoints, token, **options)

        self._async = self._run(make())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def leader(self) -> str | None:
        return self._async.leader

    def new_key(self) -> str:
        return self._async.new_key()

    def put_campaign(self, campaign_id: str, settings: Mapping[str, Any], **kw: Any) -> Any:
        return self._run(self._async.put_campaign(campaign_id, settings, **kw))

    def get_campaign(self, campaign_id: str, **kw: Any) -> dict[str, Any]:
        return self._run(self._async.get_campaign(campaign_id, **kw))

    def list_campaigns(self, prefix: str = "", **kw: Any) -> dict[str, Any]:
        return self._run(self._async.list_campaigns(prefix, **kw))

    def get_reservation(self, reservation_id: int, **kw: Any) -> dict[str, Any]:
        return self._run(self._async.get_reservation(reservation_id, **kw))

    def cluster_status(self) -> dict[str, Any]:
        return self._run(self._async.cluster_status())

    def reserve(self, campaign_id: str, amount_micros: int, **kw: Any) -> Granted:
        return self._run(self._async.reserve(campaign_id, amount_micros, **kw))

    def commit(self, reservation_id: int, amount_micros: int, **kw: Any) -> Committed:
        return self._run(self._async.commit(reservation_id, amount_micros, **kw))

    def release(self, reservation_id: int, **kw: Any) -> Released:
        return self._run(self._async.release(reservation_id, **kw))

    def record_spend(self, campaign_id: str, amount_micros: int, **kw: Any) -> Spent:
        return self._run(self._async.record_spend(campaign_id, amount_micros, **kw))

    def batch(
        self, ops: Sequence[Mapping[str, Any]], *, retry: RetryPolicy | None = None
    ) -> list[BatchResult]:
        return self._run(self._async.batch(ops, retry=retry))
