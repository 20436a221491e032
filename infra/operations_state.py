"""The operational state the workers and the APIs share through Redis, beside the
serving records (``AvailabilityStore``): the workers' status reports (the APIs'
``/readyz``), counters, and the last drift check's counts (``/metrics``).

``{prefix}:workers`` (hash): worker id -> its latest status report (JSON, with ``ts``)
``{prefix}:counters`` (hash): counter name -> count
``{prefix}:drift``: the last drift check (JSON)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import orjson

from infra.redis_client import RedisClient


class OperationsState:
    """The worker-status, counter and drift methods of ``AvailabilityStore``."""

    client: RedisClient

    def _init_operations_state(self, prefix: str) -> None:
        self._workers_key = f"{prefix}:workers"
        self._counters_key = f"{prefix}:counters"
        self._drift_key = f"{prefix}:drift"

    async def report_worker(self, worker_id: str, status: Mapping[str, Any]) -> None:
        payload = orjson.dumps({**status, "ts": time.time()})
        await self.client.hset(self._workers_key, worker_id, payload)

    async def remove_worker(self, worker_id: str) -> None:
        await self.client.hdel(self._workers_key, worker_id)

    async def workers(self, max_age: float) -> dict[str, dict[str, Any]]:
        """Statuses reported within ``max_age`` seconds; older ones are dropped."""
        now = time.time()
        raw = await self.client.hgetall(self._workers_key)
        fresh: dict[str, dict[str, Any]] = {}
        stale: list[bytes | str] = []
        for worker_id, payload in raw.items():
            status = orjson.loads(payload)
            if now - float(status.get("ts", 0)) <= max_age:
                fresh[_text(worker_id)] = status
            else:
                stale.append(worker_id)
        if stale:
            await self.client.hdel(self._workers_key, *stale)
        return fresh

    async def add_counts(self, counts: Mapping[str, int]) -> None:
        if not counts:
            return
        pipe = self.client.pipeline(transaction=False)
        for name, amount in counts.items():
            pipe.hincrby(self._counters_key, name, amount)
        await pipe.execute()

    async def save_drift(self, by_cause: Mapping[str, int], *, rows: int, bad_lines: int) -> None:
        """The last drift check's counts, for the API's /metrics."""
        payload = {
            "checked_at": time.time(),
            "by_cause": dict(by_cause),
            "rows": rows,
            "bad_lines": bad_lines,
        }
        await self.client.set(self._drift_key, orjson.dumps(payload))

    async def drift(self) -> dict[str, Any] | None:
        raw = await self.client.get(self._drift_key)
        return None if raw is None else cast(dict[str, Any], orjson.loads(raw))

    async def counts(self) -> dict[str, int]:
        raw = await self.client.hgetall(self._counters_key)
        return {_text(name): int(value) for name, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
