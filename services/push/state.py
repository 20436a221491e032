"""What the push keeps in Redis, under the deployment's prefix (README "Shopify push").

Per target and SKU, one hash, hash-tagged by the SKU (``{prefix}:push:<target>:{<sku>}``)
so that a Redis Cluster spreads them:

| field | value |
|---|---|
| ``item`` | the shop's inventory item GID; empty: the shop has no item with this SKU |
| ``item_at`` | when ``item`` was asked (epoch seconds) |
| ``s:<location>`` | the quantity we last set there (acknowledged by the shop) |
| ``w:<location>`` | the version of the figure that quantity is for (older ones are ignored) |
| ``h:<location>`` | ``<ceiling>:<until>`` after a stale compare (README: the stale-compare rule) |

Per target: ``{prefix}:push:<target>:unmapped`` (a set of SKUs), and the journal of
calls under way ``{prefix}:push:<target>:inflight`` (idempotency key -> the call), which
spans SKUs and so is tagged by the target. ``{prefix}:push:status`` holds each
process's report per target, for ``push status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from availability.push_decision import Hold
from infra.redis_client import RedisClient


@dataclass(slots=True)
class LevelState:
    last_set: int | None = None
    version: int = 0
    hold: Hold | None = None


@dataclass(slots=True)
class SkuState:
    item: str | None = None  # None: never asked; "": the shop has none
    item_at: float = 0.0
    levels: dict[str, LevelState] = field(default_factory=dict)

    def level(self, location: str) -> LevelState:
        found = self.levels.get(location)
        if found is None:
            found = self.levels[location] = LevelState()
        return found


@dataclass(frozen=True, slots=True)
class Settled:
    """A level whose figure is in the shop: what was set there, for which version."""

    sku: str
    location: str
    quantity: int
    version: int
    hold: Hold | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: Mapping[bytes, bytes]) -> SkuState:
    state = SkuState()
    for name, value in raw.items():
        key = name.decode()
        text = value.decode()
        if key == "item":
            state.item = text
        elif key == "item_at":
            state.item_at = float(text)
        elif key[:2] in ("s:", "w:", "h:"):
            level = state.level(key[2:])
            if key[0] == "s":
                level.last_set = int(text)
            elif key[0] == "w":
                level.version = int(text)
            else:
                ceiling, until = text.split(":", 1)
                level.hold = Hold(int(ceiling), float(until))
    return state


class PushState:
    def __init__(self, client: RedisClient, prefix: str, target: str) -> None:
        self.client = client
        self.base = f"{prefix}:push:{target}"
        self.unmapped_key = f"{self.base}:unmapped"
        self.journal_key = f"{self.base}:inflight"

    def sku_key(self, sku: str) -> str:
        return f"{self.base}:{{{sku}}}"

    async def load(self, skus: Sequence[str]) -> dict[str, SkuState]:
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(self.sku_key(sku))
        return {sku: _decode(raw) for sku, raw in zip(skus, await pipe.execute(), strict=True)}

    async def settle(self, settled: Iterable[Settled]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for one in settled:
            fields: dict[str, str | int] = {
                f"s:{one.location}": one.quantity,
                f"w:{one.location}": one.version,
            }
            if one.hold is not None:
                fields[f"h:{one.location}"] = f"{one.hold.ceiling}:{one.hold.until}"
            pipe.hset(self.sku_key(one.sku), mapping=fields)  # type: ignore[arg-type]
            if one.hold is None:
                pipe.hdel(self.sku_key(one.sku), f"h:{one.location}")
        await pipe.execute()

    async def save_versions(self, versions: Iterable[tuple[str, str, int]]) -> None:
        """(sku, location, version) whose figure equals what the shop was last set to."""
        pipe = self.client.pipeline(transaction=False)
        for sku, location, version in versions:
            pipe.hset(self.sku_key(sku), f"w:{location}", version)
        await pipe.execute()

    async def save_hold(self, sku: str, location: str, shop_now: int, hold: Hold) -> None:
        """After a stale compare: the shop holds ``shop_now`` (our compare base now)."""
        await self.client.hset(
            self.sku_key(sku),
            mapping={f"s:{location}": shop_now, f"h:{location}": f"{hold.ceiling}:{hold.until}"},
        )

    async def save_items(self, items: Mapping[str, str], now: float) -> None:
        """SKU -> item GID ("" when the shop has none)."""
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        for sku, item in items.items():
            pipe.hset(self.sku_key(sku), mapping={"item": item, "item_at": now})
            if item:
                pipe.srem(self.unmapped_key, sku)
            else:
                pipe.sadd(self.unmapped_key, sku)
        await pipe.execute()

    async def forget_item(self, sku: str) -> None:
        await self.client.hdel(self.sku_key(sku), "item", "item_at")

    async def unmapped(self) -> list[str]:
        return sorted(_text(m) for m in await self.client.smembers(self.unmapped_key))

    async def unmapped_count(self) -> int:
        return int(await self.client.scard(self.unmapped_key))

    # ------------------------------------------------------------ the call journal

    async def journal_put(self, key: str, call: Mapping[str, Any]) -> None:
        await self.client.hset(self.journal_key, key, orjson.dumps(call))

    async def journal_done(self, key: str) -> None:
        await self.client.hdel(self.journal_key, key)

    async def journal(self) -> dict[str, dict[str, Any]]:
        raw = await self.client.hgetall(self.journal_key)
        return {_text(k): orjson.loads(v) for k, v in raw.items()}


def status_key(prefix: str) -> str:
    return f"{prefix}:push:status"


async def report_status(
    client: RedisClient, prefix: str, replica: str, statuses: Mapping[str, Mapping[str, Any]]
) -> None:
    if statuses:
        await client.hset(
            status_key(prefix),
            mapping={f"{target}|{replica}": orjson.dumps(s) for target, s in statuses.items()},
        )


async def read_statuses(client: RedisClient, prefix: str) -> list[dict[str, Any]]:
    raw = await client.hgetall(status_key(prefix))
    return [orjson.loads(v) for _, v in sorted(raw.items())]
