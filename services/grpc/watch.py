"""Live availability for ``WatchAvailability``: one Redis subscription per process
(in Redis Cluster mode, one per master that owns a watched SKU's slot).

The stream processor's write script announces every change of a serving record on
the SKU's sharded pub/sub channel (``AvailabilityStore.change_channel``): the
locations that changed, with the SKU's live reservation holds per location while it
has any (the reservation API announces a hold it places or removes on the same
channel, with the next version, so a watch shows a reservation the moment it is
answered 201, before the worker has folded it; README "Reservations"). The hub
merges them into the figures it holds per watched SKU (``watch_figures``). A
``WatchHub`` holds one pub/sub connection for the whole
process and subscribes to a SKU's channel while at least one watch wants it, so N
watches of one SKU cost one subscription, and a change is decoded once however
many watches show it. In Redis Cluster mode a sharded channel lives on the master
that owns its slot (the SKU's hash tag), so the hub holds one pub/sub connection per
such master, each read by its own task, and subscribes each channel on its owner.

A ``Watch`` keeps, per SKU, only the latest figures not yet sent: a client that
reads slowly gets the newest figures when it reads again (with a version gap),
and the server's memory per watch is bounded by its SKU count. gRPC's flow control
holds the handler at ``yield`` while the client does not read; changes arriving
meanwhile overwrite each other here.

Ordering: a watch subscribes first and reads the SKUs' current records after Redis
confirmed the subscriptions, so a change is either in what it read or arrives
later on the channel; versions tell which, and older ones are dropped. A watch
whose confirmations do not come within ``subscribe_timeout`` seconds ends with
``WatchClosed`` instead of waiting for ever.

Thresholds (``availability.watch_thresholds``): a watch with ``low_stock`` or
``min_delta`` compares each change with the figures it last *sent* and sends only
those the thresholds call for. The decision is made when a change is taken to be
sent, so coalescing still keeps one pending change per SKU.

Limits: ``max_watches`` open watches per process, and ``max_per_identity`` per
caller (``Identity``: kind and subject), so one credential cannot take every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.crc import key_slot

from availability.ats import SkuAvailability, watched_view
from availability.watch_thresholds import NO_THRESHOLDS, Thresholds, figures_of, worth_sending
from infra.records import decode_change
from infra.store import AvailabilityStore
from services.auth.identity import Identity
from services.grpc.watch_figures import WatchedFigures

log = logging.getLogger(__name__)

#: Seconds the reader waits for a message before checking that it should go on.
READ_TIMEOUT = 1.0
LOST_MESSAGE = "the server lost its connection to the store (Redis); reconnect"


class WatchClosed(Exception):
    """The hub can no longer feed the watch; the message says why."""


class TooManyWatches(Exception):
    """A watch limit is reached; the message names which."""


class ConnectionLost(RuntimeError):
    """Not a ``ConnectionError``: redis-py would retry that, and reconnect again."""


class ChangeSubscription(PubSub):
    """A pub/sub connection that fails instead of silently reconnecting.

    redis-py reconnects a lost pub/sub connection by itself and subscribes again,
    but what was published in between is gone. A watch must then start over from
    the records, so the hub ends every watch (``WatchHub._read``).
    """

    connects = 0

    async def on_connect(self, connection: Any) -> None:
        self.connects += 1
        if self.connects > 1:
            raise ConnectionLost("the subscription connection to the store was lost")
        await super().on_connect(connection)


@dataclass(frozen=True, slots=True)
class Update:
    sku: str
    version: int
    answer: dict[str, Any]  # what the watch shows: availability.ats.watched_view
    initial: bool


class Watch:
    """One ``WatchAvailability`` stream's state: what it showed and what is new."""

    def __init__(
        self,
        skus: Sequence[str],
        channel: str,
        location_ids: Collection[str] | None,
        owner: Identity | None = None,
        thresholds: Thresholds = NO_THRESHOLDS,
    ):
        self.skus = list(dict.fromkeys(skus))
        self.owner = owner
        self.channel = channel
        self.location_ids = frozenset(location_ids) if location_ids else None
        self.thresholds = thresholds
        self._versions: dict[str, int] = dict.fromkeys(self.skus, -1)  # shown or dropped
        self._shown: dict[str, dict[str, Any]] = {}  # the last answer sent per SKU
        self._latest: dict[str, tuple[int, SkuAvailability | None]] = {}
        self._initial: list[tuple[str, int, SkuAvailability | None]] | None = None
        self._wake = asyncio.Event()
        self.closed: str | None = None
        self.coalesced = 0  # changes superseded before they were sent
        self.held_back = 0  # changes the thresholds did not call for

    def offer(self, sku: str, version: int, availability: SkuAvailability | None) -> None:
        """A change of ``sku``'s record; keeps only the newest unsent one."""
        waiting = self._latest.get(sku)
        if waiting is not None:
            if waiting[0] >= version:
                return
            self.coalesced += 1
        self._latest[sku] = (version, availability)
        self._wake.set()

    def start(self, current: Sequence[tuple[int, SkuAvailability | None]]) -> None:
        """The records as read after subscribing, one per SKU in ``skus`` order."""
        self._initial = [
            (sku, version, availability)
            for sku, (version, availability) in zip(self.skus, current, strict=True)
        ]
        self._wake.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self._wake.set()

    def _show(self, sku: str, version: int, answer: dict[str, Any]) -> dict[str, Any]:
        self._versions[sku] = version
        self._shown[sku] = answer
        return answer

    async def updates(self) -> AsyncIterator[Update]:
        """The initial figures, then changes, until the watch is closed."""
        while self._initial is None:
            await self._wake.wait()
            self._wake.clear()
            if self.closed is not None:
                raise WatchClosed(self.closed)
        initial, self._initial = self._initial, []
        for sku, version, availability in initial:
            answer = watched_view(sku, availability, self.channel, self.location_ids)
            yield Update(sku, version, self._show(sku, version, answer), True)
        while True:
            if self.closed is not None:
                raise WatchClosed(self.closed)
            if not self._latest:
                self._wake.clear()
                await self._wake.wait()
                continue
            sku, (version, availability) = next(iter(self._latest.items()))
            del self._latest[sku]
            if version <= self._versions[sku]:
                continue  # already in what was shown
            before = self._shown.get(sku)
            answer = watched_view(sku, availability, self.channel, self.location_ids)
            if not self._calls_for_sending(before, answer):
                # Not sent: later changes are still compared with what was sent last,
                # but this version is seen, so an older one arriving late is dropped.
                self._versions[sku] = version
                continue
            yield Update(sku, version, self._show(sku, version, answer), False)

    def _calls_for_sending(self, before: dict[str, Any] | None, answer: dict[str, Any]) -> bool:
        if answer == before:
            return False
        if before is None or not self.thresholds.active:
            return True
        if worth_sending(self.thresholds, figures_of(before), figures_of(answer)):
            return True
        self.held_back += 1
        return False


class WatchHub:
    """The process's subscriptions to the change channels of the SKUs watched."""

    def __init__(
        self,
        store: AvailabilityStore,
        max_watches: int,
        max_per_identity: int | None = None,
        subscribe_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.max_watches = max_watches
        self.max_per_identity = max_per_identity or max_watches
        self.subscribe_timeout = subscribe_timeout
        self._per_owner: dict[tuple[str, str], int] = {}  # (kind, subject) -> open watches
        # Per Redis node ("" for a single Redis; a master's host:port in a cluster).
        self._pubsubs: dict[str, ChangeSubscription] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._watches: dict[bytes, set[Watch]] = {}  # channel -> watches of it
        self._sku_of: dict[bytes, str] = {}
        # Per channel: subscribe commands sent, and confirmations received. Replies
        # come back in command order, so the n-th confirmation answers the n-th.
        self._sent: dict[bytes, int] = {}
        self._confirmed: dict[bytes, int] = {}
        self._confirmation = asyncio.Condition()
        self._open: set[Watch] = set()
        self._closing: str | None = None
        self._notifying: asyncio.Task[None] | None = None
        self.figures = WatchedFigures(store, self._deliver)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_by(self, owner: Identity) -> int:
        return self._per_owner.get(_owner_key(owner), 0)

    async def open(
        self,
        skus: Sequence[str],
        channel: str,
        location_ids: Collection[str] | None,
        owner: Identity | None = None,
        thresholds: Thresholds = NO_THRESHOLDS,
    ) -> Watch:
        """A started watch: subscribed, with its initial figures read. ``owner``: the
        caller whose quota it counts against (None: only the server's limit applies);
        ``thresholds``: which changes it sends.

        Raises ``TooManyWatches``, ``WatchClosed`` (shutting down, or the subscription
        not confirmed in time) or a Redis error.
        """
        if self._closing is not None:
            raise WatchClosed(self._closing)
        if len(self._open) >= self.max_watches:
            raise TooManyWatches(f"this server holds its maximum of {self.max_watches} watches")
        if owner is not None and self.open_by(owner) >= self.max_per_identity:
            raise TooManyWatches(
                f"the credential of {owner.subject!r} holds its quota of"
                f" {self.max_per_identity} watches per credential; close one first"
            )
        watch = Watch(skus, channel, location_ids, owner, thresholds)
        self._open.add(watch)
        if owner is not None:
            key = _owner_key(owner)
            self._per_owner[key] = self._per_owner.get(key, 0) + 1
        try:
            await self._subscribe(watch)
            records = await self.store.read_folded(watch.skus)
            watch.start(
                [
                    self.figures.seed(sku, record)
                    for sku, record in zip(watch.skus, records, strict=True)
                ]
            )
        except BaseException:
            await self.release(watch)
            raise
        return watch

    async def release(self, watch: Watch) -> None:
        """Forget a watch (ended, cancelled or failed); drop subscriptions nobody needs."""
        if watch not in self._open:
            return
        self._open.discard(watch)
        if watch.owner is not None:
            key = _owner_key(watch.owner)
            left = self._per_owner[key] - 1
            if left:
                self._per_owner[key] = left
            else:
                del self._per_owner[key]
        unused = []
        for sku in watch.skus:
            name = self.store.change_channel(sku)
            watchers = self._watches.get(name)
            if watchers is None:
                continue
            watchers.discard(watch)
            if not watchers:
                del self._watches[name]
                del self._sku_of[name]
                self.figures.forget(sku)
                unused.append(name)
                if self._confirmed.get(name) == self._sent.get(name):
                    # Nothing in flight: forget the counts (else a late confirmation
                    # would answer a future subscription too early).
                    self._confirmed.pop(name, None)
                    self._sent.pop(name, None)
        for node, names in self._by_node(unused).items():
            pubsub = self._pubsubs.get(node)
            if pubsub is not None:
                # A failed connection is the reader's to report; a closed one fails too.
                with contextlib.suppress(Exception):
                    for group in self._by_slot(names):
                        await pubsub.sunsubscribe(*group)

    async def close(self, reason: str) -> None:
        """End every watch with ``reason`` and refuse new ones (server shutdown)."""
        self._closing = reason
        self._fail_all(reason)
        await self._stop_reader()

    async def _subscribe(self, watch: Watch) -> None:
        if isinstance(self.store.client, RedisCluster):
            await self.store.client.initialize()  # the slot map, once (no-op after)
        new: list[bytes] = []
        targets: dict[bytes, int] = {}
        for sku in watch.skus:
            name = self.store.change_channel(sku)
            watchers = self._watches.get(name)
            if watchers is None:
                watchers = self._watches[name] = set()
                self._sku_of[name] = sku
                self._sent[name] = self._sent.get(name, 0) + 1
                new.append(name)
            watchers.add(watch)
            # A channel another watch subscribed to may not be confirmed yet: wait for
            # its confirmation too, or a change could predate the initial read.
            targets[name] = self._sent[name]
        for node, names in self._by_node(new).items():
            pubsub = self._pubsubs.get(node)
            if pubsub is None:
                pubsub = self._pubsubs[node] = self._new_pubsub(node)
            try:
                # One command per slot: a cluster refuses channels of several slots
                # in one SSUBSCRIBE. Its replies are the reader task's to read.
                for group in self._by_slot(names):
                    await pubsub.ssubscribe(*group)
            except (redis.exceptions.RedisError, OSError, ConnectionLost) as exc:
                await self._drop(pubsub, exc)
                raise WatchClosed(LOST_MESSAGE) from exc
            reader = self._readers.get(node)
            if reader is None or reader.done():
                self._readers[node] = asyncio.create_task(self._read(pubsub))
        try:
            async with asyncio.timeout(self.subscribe_timeout), self._confirmation:
                await self._confirmation.wait_for(
                    lambda: (
                        watch.closed is not None
                        or all(self._confirmed.get(name, 0) >= n for name, n in targets.items())
                    )
                )
        except TimeoutError:
            # Redis is overloaded or the connection is stuck: say so rather than hold
            # the call (and its slot) for ever. Other watches are left alone.
            log.warning(
                "watch hub: %d subscription(s) not confirmed within %g s",
                len(targets),
                self.subscribe_timeout,
            )
            raise WatchClosed(
                f"the store (Redis) did not confirm the subscription within"
                f" {self.subscribe_timeout:g} s; try again"
            ) from None
        if watch.closed is not None:
            raise WatchClosed(watch.closed)

    def _by_node(self, names: Sequence[bytes]) -> dict[str, list[bytes]]:
        """Channels grouped by the Redis node that serves them."""
        client = self.store.client
        if not isinstance(client, RedisCluster):
            return {"": list(names)} if names else {}
        groups: dict[str, list[bytes]] = {}
        for name in names:
            node = client.get_node_from_key(name.decode())
            if node is None:
                raise WatchClosed(LOST_MESSAGE)
            groups.setdefault(node.name, []).append(name)
        return groups

    def _by_slot(self, names: Sequence[bytes]) -> list[list[bytes]]:
        if not isinstance(self.store.client, RedisCluster):
            return [list(names)]
        groups: dict[int, list[bytes]] = {}
        for name in names:
            groups.setdefault(key_slot(name), []).append(name)
        return list(groups.values())

    def _new_pubsub(self, node: str) -> ChangeSubscription:
        """A subscription connection to ``node`` (see ``_by_node``)."""
        client = self.store.client
        if not isinstance(client, RedisCluster):
            return ChangeSubscription(client.connection_pool)
        owner = client.get_node(node_name=node)
        if owner is None:
            raise WatchClosed(LOST_MESSAGE)
        # Its own connection pool: the subscription holds its connection for good.
        pool = ConnectionPool(connection_class=owner.connection_class, **owner.connection_kwargs)
        return ChangeSubscription(pool)

    async def _read(self, pubsub: ChangeSubscription) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "smessage":
                    self._dispatch(message["channel"], message["data"])
                elif kind == "ssubscribe":
                    name = message["channel"]
                    self._confirmed[name] = self._confirmed.get(name, 0) + 1
                    async with self._confirmation:
                        self._confirmation.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone: every watch must reconnect
            await self._drop(pubsub, exc)

    async def _drop(self, pubsub: ChangeSubscription, exc: BaseException) -> None:
        """A subscription connection failed: end every watch, and start afresh next
        time on every node (a watch may span several)."""
        log.warning("watch hub: subscription connection lost: %r", exc)
        self._fail_all(LOST_MESSAGE)
        pubsubs = list(self._pubsubs.values())
        self._pubsubs.clear()
        self._sent.clear()
        self._confirmed.clear()
        current = asyncio.current_task()
        readers = [task for task in self._readers.values() if task is not current]
        self._readers.clear()
        for task in readers:
            task.cancel()
        for other in {id(p): p for p in [pubsub, *pubsubs]}.values():
            with contextlib.suppress(Exception):
                await other.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        watchers = self._watches.get(channel)
        if not watchers:
            return
        try:
            change = decode_change(data)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.error("watch hub: unreadable change on %r: %r", channel, exc)
            return
        self.figures.announce(self._sku_of[channel], change)

    def _deliver(self, sku: str, version: int, served: SkuAvailability | None) -> None:
        """New figures of a watched SKU (``WatchedFigures``): to each of its watches."""
        for watch in self._watches.get(self.store.change_channel(sku), ()):
            watch.offer(sku, version, served)

    def _fail_all(self, reason: str) -> None:
        for watch in list(self._open):
            watch.close(reason)
        self._watches.clear()
        self._sku_of.clear()
        self.figures.forget_all()
        # Wake opens waiting for confirmations that will never come.
        self._notifying = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._confirmation:
            self._confirmation.notify_all()

    async def _stop_reader(self) -> None:
        await self.figures.close()
        readers = list(self._readers.values())
        self._readers.clear()
        for reader in readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pubsubs = list(self._pubsubs.values())
        self._pubsubs.clear()
        for pubsub in pubsubs:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _owner_key(owner: Identity) -> tuple[str, str]:
    return owner.kind, owner.subject
