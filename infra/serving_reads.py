"""The serving layer's reads (part of ``AvailabilityStore``): a SKU's answer for a
channel, narrowed to a location, in batches, with live reservation holds counted,
and its folded figures at a version (Watch).

A record keeps one field per location (``infra.records``), so a read of a whole SKU
joins them; the joined answer is kept beside them per channel and version
(``read_tail``), so repeated reads of an unchanged SKU cost one field.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from availability.ats import SkuAvailability
from availability.holds import Hold, with_held, with_holds
from infra.records import (
    CHANNEL_PREFIX,
    CHANNELS_FIELD,
    DEFAULT_PREFIX,
    answer_tail,
    decode_held,
    join_answer,
    pairs,
    record_from_fields,
    tail_from,
)
from infra.redis_client import REDIS_FAILURES, RedisClient
from infra.redis_raw import TOPOLOGY_REPLIES, calls_per_master, pack_command, round_trip

#: In a record: the latest deadline (ms) of the SKU's reservation holds, while it has any.
HOLDS_FIELD = b"h"


@dataclass(frozen=True, slots=True)
class FoldedRecord:
    """A record's version, its folded figures (None: no record) and the SKU's live
    holds per location at that version."""

    version: int
    folded: SkuAvailability | None
    held: dict[str, int]


class ServingReads:
    """The reads of ``AvailabilityStore``; it provides the client, the keys and the
    scripts."""

    client: RedisClient
    _read_served: Any
    _keep_answer: Any
    _run_script: Callable[..., Awaitable[list[Any]]]

    def sku_key(self, sku: str) -> str:
        raise NotImplementedError

    def holds_key(self, sku: str) -> str:
        raise NotImplementedError

    async def read_tail(self, sku: str, channel: str) -> bytes | None:
        """The SKU's answer tail for ``channel``; None when it has no record.

        The joined answer of a channel is kept in the record with the version it was
        joined at (``j:<channel>``, or ``j:*`` for every channel without a buffer):
        while the record is at that version a read is one HMGET of it, as cheap as
        one field whatever the location count; after a change the first read joins
        the fragments (one HGETALL) and keeps the result."""
        key = self.sku_key(sku)
        wanted = channel.encode()
        version, channels, holds_until, *kept = await self.client.hmget(
            key, [b"v", CHANNELS_FIELD, HOLDS_FIELD, *_answer_fields(wanted)]
        )
        if channels is None:
            return None
        if not _holds_live(holds_until):
            joined, joined_at = kept[2:] if wanted in channels.split() else kept[:2]
            if joined is not None and joined_at == version:
                return cast(bytes, joined)
        fields = pairs(await self.client.hgetall(key))
        tail = join_answer(fields, wanted)
        if tail is None:
            return None
        if _holds_live(fields.get(HOLDS_FIELD)):
            return (await self._tails_with_holds([sku], channel))[0] or tail
        own = wanted in fields[CHANNELS_FIELD].split()
        answer_field, at_field = _answer_fields(wanted)[2:] if own else _answer_fields(wanted)[:2]
        await self._keep_answer(keys=[key], args=[fields[b"v"], answer_field, tail, at_field])
        return tail

    async def read_location_tail(self, sku: str, channel: str, location_id: str) -> bytes | None:
        """The answer tail narrowed to one location (``?location_id=``): one HMGET of
        that location's fields, whatever the SKU's location count; None when the SKU
        has no record."""
        exists, default, buffered, holds_until = await self.client.hmget(
            self.sku_key(sku),
            [
                CHANNELS_FIELD,
                DEFAULT_PREFIX + location_id.encode(),
                CHANNEL_PREFIX + channel.encode() + b":" + location_id.encode(),
                HOLDS_FIELD,
            ],
        )
        if exists is None:
            return None
        if _holds_live(holds_until):
            [served] = await self._read_with_holds([sku])
            if served is None:
                return None
            found = [loc for loc in served.locations if loc.location_id == location_id]
            narrowed = SkuAvailability(sku, tuple(found), None)
            return answer_tail(narrowed, channel)
        fragment = cast(bytes | None, buffered or default)
        if fragment is None:
            return tail_from(0, [])
        return tail_from(int(orjson.loads(fragment)["ats"]), [fragment])

    async def read_tails(self, skus: Sequence[str], channel: str) -> list[bytes | None]:
        wanted = channel.encode()
        tails: list[bytes | None] = []
        held: list[int] = []
        records = await self._hgetall_many([self.sku_key(sku).encode() for sku in skus])
        for index, fields in enumerate(records):
            tails.append(join_answer(fields, wanted))
            if tails[-1] is not None and _holds_live(fields.get(HOLDS_FIELD)):
                held.append(index)
        if held:
            recounted = await self._tails_with_holds([skus[i] for i in held], channel)
            for index, tail in zip(held, recounted, strict=True):
                if tail is not None:
                    tails[index] = tail
        return tails

    async def _hgetall_many(self, keys: Sequence[bytes]) -> list[dict[bytes, bytes]]:
        """HGETALL of each key in one round trip (a cluster: one per master,
        concurrently), packed as the writes are (``infra.redis_raw``); in a cluster
        whose slot map is stale, through redis-py's cluster pipeline."""
        if not keys:
            return []
        if isinstance(self.client, RedisCluster):
            try:
                replies = await calls_per_master(
                    self.client, (b"HGETALL",), [(key,) for key in keys]
                )
            except REDIS_FAILURES:
                replies = None
            if replies is not None and not any(
                isinstance(reply, TOPOLOGY_REPLIES) for reply in replies
            ):
                for reply in replies:
                    if isinstance(reply, ResponseError):
                        raise reply
                return [pairs(reply) for reply in replies]
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return [pairs(reply) for reply in await pipe.execute()]
        # A single Redis: packed the same way (redis-py's pipeline cost more than twice
        # the CPU per batch: BENCHMARKS.md "Redis Cluster").
        payload = b"".join([pack_command((b"HGETALL", key)) for key in keys])
        replies = await round_trip(self.client, payload, len(keys))
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return [pairs(reply) for reply in replies]

    async def _tails_with_holds(self, skus: Sequence[str], channel: str) -> list[bytes | None]:
        """Answer tails that count the SKUs' live reservation holds as reserved: read
        your writes, before the worker has folded the reservations (README
        "Reservations"). Only SKUs with holds take this path."""
        return [
            None if availability is None else answer_tail(availability, channel)
            for availability in await self._read_with_holds(skus)
        ]

    async def _read_with_holds(self, skus: Sequence[str]) -> list[SkuAvailability | None]:
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(self.sku_key(sku))
            pipe.hgetall(self.holds_key(sku))
        replies = await pipe.execute()
        now = time.time_ns() // 1_000_000
        answers: list[SkuAvailability | None] = []
        for index, sku in enumerate(skus):
            folded = record_from_fields(sku, pairs(replies[2 * index]))
            holds = pairs(replies[2 * index + 1])
            if folded is None:
                answers.append(None)
                continue
            answers.append(
                with_holds(folded, [Hold.decode(_text(r), v) for r, v in holds.items()], now)
            )
        return answers

    async def read_folded(self, skus: Sequence[str]) -> list[FoldedRecord]:
        """Each SKU's version, folded figures and live holds per location, read
        together: one round trip, a second for the SKUs that have holds (version,
        fields and holds in one step). (0, None, {}) for a SKU never seen."""
        records = await self._hgetall_many([self.sku_key(sku).encode() for sku in skus])
        answers: list[FoldedRecord] = []
        held: list[int] = []
        for index, (sku, fields) in enumerate(zip(skus, records, strict=True)):
            folded = record_from_fields(sku, fields)
            if folded is None:
                answers.append(FoldedRecord(0, None, {}))
                continue
            answers.append(FoldedRecord(int(fields[b"v"]), folded, {}))
            if _holds_live(fields.get(HOLDS_FIELD)):
                held.append(index)
        if held:
            now = b"%d" % (time.time_ns() // 1_000_000)
            calls = [
                (self.sku_key(skus[i]).encode(), self.holds_key(skus[i]).encode(), now)
                for i in held
            ]
            replies = await self._run_script(self._read_served, calls, keys=2)
            for index, reply in zip(held, replies, strict=True):
                if len(reply) == 3:
                    version, fields, held_json = reply
                    answers[index] = FoldedRecord(
                        int(version),
                        record_from_fields(skus[index], pairs(fields)),
                        decode_held(held_json),
                    )
                else:
                    answers[index] = FoldedRecord(0, None, {})
        return answers

    async def read_versions(self, skus: Sequence[str]) -> list[tuple[int, SkuAvailability | None]]:
        """Each SKU's version and the figures it serves at that version (live holds
        counted as reserved); (0, None) if never seen."""
        return [
            (
                record.version,
                None if record.folded is None else with_held(record.folded, record.held),
            )
            for record in await self.read_folded(skus)
        ]

    async def read_availability(self, sku: str) -> SkuAvailability | None:
        """The SKU's figures, its live reservation holds counted as reserved."""
        fields = pairs(await self.client.hgetall(self.sku_key(sku)))
        if _holds_live(fields.get(HOLDS_FIELD)):
            return (await self._read_with_holds([sku]))[0]
        return record_from_fields(sku, fields)


def _answer_fields(channel: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """The fields of a kept answer and its version: for every channel without a
    buffer, then for ``channel``."""
    return b"j:*", b"jv:*", b"j:" + channel, b"jv:" + channel


def _holds_live(holds_until: bytes | str | None) -> bool:
    """Whether a record's ``h`` says some hold may still count."""
    return holds_until is not None and int(holds_until) > time.time_ns() // 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
