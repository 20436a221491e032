"""One shop: which figures are due, the calls that set them, and what the answers mean.

Calls set ``available`` of up to 250 levels (``inventorySetQuantities``), each with
``changeFromQuantity`` = what we last set there (compare-and-set; unknown, e.g. a
level never pushed: null), under an idempotency key that every retry of the call
reuses. The call is written to the journal in Redis before it is sent and removed once
its answer is recorded, so after a crash the same call is sent again with the same key
(:meth:`PushTarget.recover`): Shopify answers a call it already applied from its
record, and applies it otherwise; no call is applied twice.

A stale compare fails the whole call (Shopify applies nothing of it): the stale levels
are read again and held (``availability.push_decision``), the others go again in the
next call, under a new key (its input differs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from availability.push_decision import Hold, capped, due_at
from availability.push_policy import PushPolicyBook
from infra import shopify_documents as docs
from infra.config import Settings
from infra.redis_client import RedisClient
from infra.shopify_config import ShopifyTarget
from services.push import shop_reads
from services.push.levels import Key, Levels, Pending
from services.push.metrics import PushMetrics
from services.push.shopify import GraphQLFailure, InternalError, ShopifyClient, TargetRefused
from services.push.state import PushState, Settled, SkuState

log = logging.getLogger(__name__)

SET_COST: Final = 10
STALE: Final = "CHANGE_FROM_QUANTITY_STALE"
CONCURRENT: Final = "IDEMPOTENCY_CONCURRENT_REQUEST"
NEW_KEY: Final = frozenset(
    {"IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED", "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"}
)
#: Seconds before levels of a call that failed for a reason of ours are tried again.
RETRY_LATER: Final = 10.0


def new_key(target: str) -> str:
    return f"push-{target}-{uuid.uuid4().hex}"


class PushTarget:
    def __init__(
        self,
        config: ShopifyTarget,
        settings: Settings,
        redis: RedisClient,
        policies: Callable[[], PushPolicyBook],
        metrics: PushMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = config.name
        self.settings = settings
        self.policies = policies
        self.metrics = metrics
        self.clock = clock
        self.client = ShopifyClient(config, metrics, timeout=settings.push_call_timeout)
        self.state = PushState(redis, settings.redis_key_prefix, config.name)
        self.levels = Levels()
        self.skus: dict[str, SkuState] = {}
        self.holds: dict[Key, float] = {}
        self.stopped: str | None = None
        self.dropped_while_stopped = 0
        self.unmapped = 0
        self.recovered = asyncio.Event()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.push_max_in_flight)
        self._calls: set[asyncio.Task[None]] = set()
        self._reference = f"gid://availability-service/Push/{config.name}"
        metrics.up.labels(self.name).set(1)

    # ------------------------------------------------------------------ decisions

    def due(self, entry: Pending, now: float) -> float | None:
        """When the entry must be sent (None: the shop holds its figure already)."""
        level = self.skus[entry.sku].level(entry.location)
        policy = self.policies().resolve(entry.sku, entry.location)
        quantity = capped(entry.figure, level.hold, now)
        due = due_at(policy, quantity, level.last_set, entry.since)
        if due is None and quantity < entry.figure and level.hold is not None:
            return level.hold.until  # held below our figure: look again when the hold ends
        return due

    async def ingest(self, changes: Sequence[tuple[int, int, Any]]) -> None:
        """(partition, offset, FeedChange) in feed order: coalesce and schedule."""
        if self.stopped is not None:
            return
        mapped = self.config.locations
        skus = sorted({c.sku for _, _, c in changes if any(loc in mapped for loc in c.figures)})
        if not skus:
            return
        self.skus.update(await self.state.load(skus))
        now = self.clock()
        in_shop: list[tuple[str, str, int]] = []
        for partition, offset, change in changes:
            state = self.skus.get(change.sku)
            if state is None:
                continue
            for location, figure in change.figures.items():
                if location not in mapped:
                    continue
                level = state.level(location)
                key = (change.sku, location)
                if change.version <= max(level.version, self.levels.newest_version(key)):
                    continue  # an older version never overwrites a newer one
                entry = self.levels.offer(
                    change.sku, location, figure, change.version, change.computed_at,
                    partition, offset,
                )  # fmt: skip
                if key in self.levels.in_flight:
                    self.levels.schedule(entry, entry.since)  # decided when the call ends
                    continue
                due = self.due(entry, now)
                if due is None:
                    self.levels.drop(key)
                    level.version = change.version
                    in_shop.append((change.sku, location, change.version))
                else:
                    self.levels.schedule(entry, due)
        if in_shop:
            await self.state.save_versions(in_shop)
        self._wake.set()

    def policies_changed(self) -> None:
        now = self.clock()
        settled = self.levels.reschedule_all(lambda e: self.due(e, now))
        for entry in settled:
            self.skus[entry.sku].level(entry.location).version = entry.version
        self._wake.set()

    # ------------------------------------------------------------------ the writer

    async def run(self) -> None:
        await self.client.start()
        try:
            try:
                await self.recover()
            finally:
                self.recovered.set()
            while True:
                if self.stopped is not None:
                    await self._wait_resumed()
                    continue
                now = self.clock()
                next_due = self.levels.next_due()
                if next_due is None or next_due > now:
                    self._wake.clear()
                    timeout = None if next_due is None else next_due - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    continue
                await self._slots.acquire()
                try:
                    await self.client.wait_ready(SET_COST)
                    await self._one_call()
                except TargetRefused as exc:
                    self._slots.release()
                    self._stop(exc)
                except BaseException:
                    self._slots.release()
                    raise
        finally:
            for task in list(self._calls):
                task.cancel()
            await asyncio.gather(*self._calls, return_exceptions=True)
            await self.client.close()

    async def _one_call(self) -> None:
        """Takes what is due and sends it (the call slot is released when it ends)."""
        now = self.clock()
        batch = self.levels.take_due(now, docs.MAX_BATCH)
        try:
            await self._map([e.sku for e in batch], now)
        except (GraphQLFailure, InternalError) as exc:
            log.error("shopify push to %s: asking for item ids failed: %s", self.name, exc)
            for entry in batch:
                self.levels.requeue(entry, now + RETRY_LATER)
            self._slots.release()
            return
        except TargetRefused:
            raise
        entries, quantities, in_shop = [], [], []
        for entry in batch:
            state = self.skus[entry.sku]
            if not state.item:
                continue  # the shop has no such item: counted and listed, not retried
            level = state.level(entry.location)
            quantity = capped(entry.figure, level.hold, now)
            if quantity == level.last_set:
                if quantity < entry.figure and level.hold is not None:
                    self.levels.requeue(entry, level.hold.until)
                else:
                    level.version = entry.version
                    in_shop.append((entry.sku, entry.location, entry.version))
                continue
            entry.quantity = quantity
            entries.append(entry)
            quantities.append(
                {
                    "inventoryItemId": state.item,
                    "locationId": self.config.locations[entry.location],
                    "quantity": quantity,
                    "changeFromQuantity": level.last_set,
                }
            )
        if in_shop:
            await self.state.save_versions(in_shop)
        if not entries:
            self._slots.release()
            return
        self.levels.start(entries)
        task = asyncio.create_task(self._send(entries, quantities), name=f"push-{self.name}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def _variables(self, key: str, quantities: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "idempotencyKey": key,
            "input": {
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": self._reference,
                "quantities": quantities,
            },
        }

    async def _send(self, entries: list[Pending], quantities: list[dict[str, Any]]) -> None:
        key = new_key(self.name)
        variables = self._variables(key, quantities)
        levels = [[e.sku, e.location, e.quantity, e.version] for e in entries]
        try:
            await self.state.journal_put(key, {"variables": variables, "levels": levels})
            attempt = 0
            while True:
                attempt += 1
                try:
                    answer = await self.client.call(
                        "SetQuantities", docs.SET_QUANTITIES, variables, SET_COST
                    )
                except InternalError:
                    await self.state.journal_done(key)
                    key = new_key(self.name)
                    variables = self._variables(key, quantities)
                    await self.state.journal_put(key, {"variables": variables, "levels": levels})
                    continue
                payload = answer.data.get("inventorySetQuantities") or {}
                errors = payload.get("userErrors") or []
                codes = {str(e.get("code")) for e in errors}
                if not errors:
                    await self._settle(entries)
                elif CONCURRENT in codes:
                    await asyncio.sleep(min(5.0, 0.2 * attempt))
                    continue
                elif codes & NEW_KEY:
                    await self.state.journal_done(key)
                    key = new_key(self.name)
                    variables = self._variables(key, quantities)
                    await self.state.journal_put(key, {"variables": variables, "levels": levels})
                    continue
                else:
                    await self._user_errors(entries, errors)
                break
            await self.state.journal_done(key)
        except TargetRefused as exc:
            self._stop(exc)
        except GraphQLFailure as exc:
            log.error("shopify push to %s: a call was refused: %s", self.name, exc)
            for entry in entries:
                self.levels.requeue(entry, self.clock() + RETRY_LATER)
        finally:
            self.levels.finish(entries)
            self._slots.release()
            now = self.clock()
            for entry in entries:
                waiting = self.levels.queued.get(entry.key)
                if waiting is not None:
                    due = self.due(waiting, now)
                    self.levels.schedule(waiting, now if due is None else due)
            self._wake.set()

    async def _settle(self, entries: Sequence[Pending]) -> None:
        now = self.clock()
        settled = []
        for entry in entries:
            level = self.skus[entry.sku].level(entry.location)
            hold = level.hold if level.hold is not None and level.hold.until > now else None
            settled.append(Settled(entry.sku, entry.location, entry.quantity, entry.version, hold))
        await self.state.settle(settled)
        lags = self.metrics.lag.labels(self.name)
        for entry in entries:
            level = self.skus[entry.sku].level(entry.location)
            level.last_set = entry.quantity
            level.version = max(level.version, entry.version)
            lags.observe(max(0.0, now - entry.computed_at))
        self.metrics.quantities.labels(self.name).inc(len(entries))

    async def _user_errors(self, entries: list[Pending], errors: list[dict[str, Any]]) -> None:
        by_index: dict[int, set[str]] = {}
        for error in errors:
            field = error.get("field") or []
            if len(field) >= 3 and field[:2] == ["input", "quantities"] and str(field[2]).isdigit():
                by_index.setdefault(int(field[2]), set()).add(str(error.get("code")))
            else:
                log.error("shopify push to %s: %s", self.name, str(error)[:300])
                self.client.fail(f"user_error:{error.get('code')}")
        stale: list[Pending] = []
        now = self.clock()
        for index, entry in enumerate(entries):
            codes = by_index.get(index, set())
            if STALE in codes:
                stale.append(entry)
            elif "INVALID_INVENTORY_ITEM" in codes:
                self.skus[entry.sku].item = None  # asked again before the next call
                await self.state.forget_item(entry.sku)
                self.levels.requeue(entry, now)
            elif codes:
                self.client.fail(f"user_error:{sorted(codes)[0]}")
                log.error(
                    "shopify push to %s: %s at %s refused: %s",
                    self.name, entry.sku, entry.location, ", ".join(sorted(codes)),
                )  # fmt: skip
            else:
                self.levels.requeue(entry, now)  # nothing of the call was applied
        if stale:
            await self._stale(stale)

    async def _stale(self, entries: list[Pending]) -> None:
        """Read the stale levels again and hold each at what the shop holds now."""
        self.client.fail("stale_compare", len(entries))
        by_location: dict[str, list[Pending]] = {}
        for entry in entries:
            by_location.setdefault(entry.location, []).append(entry)
        for location, group in by_location.items():
            shop = await self.read_levels([e.sku for e in group], location)
            now = self.clock()
            for entry in group:
                shop_now = shop.get(entry.sku, 0)
                level = self.skus[entry.sku].level(entry.location)
                hold = Hold(shop_now, now + self.settings.push_stale_hold)
                log.info(
                    "shopify push to %s: stale compare at %s/%s: the shop holds %d, we had set"
                    " %s, our figure is %d",
                    self.name, entry.sku, location, shop_now, level.last_set, entry.figure,
                )  # fmt: skip
                if shop_now < entry.figure:
                    self.metrics.disagreements.labels(self.name).inc()
                    self.holds[entry.key] = hold.until
                level.last_set, level.hold = shop_now, hold
                await self.state.save_hold(entry.sku, entry.location, shop_now, hold)
                self.levels.requeue(entry, now)

    async def read_levels(self, skus: Sequence[str], location: str) -> dict[str, int]:
        """The shop's ``available`` of each SKU at one of our locations."""
        return await shop_reads.read_levels(self.client, skus, self.config.locations[location])

    # ------------------------------------------------------------------ item ids

    def _needs_item(self, state: SkuState, now: float) -> bool:
        if state.item is None:
            return True
        age = now - state.item_at
        ttl = self.settings.push_item_ttl if state.item else self.settings.push_unmapped_retry
        return age > ttl

    async def _map(self, skus: Sequence[str], now: float) -> None:
        wanted = sorted({s for s in skus if self._needs_item(self.skus[s], now)})
        for start in range(0, len(wanted), docs.MAX_BATCH):
            items = await self.find_items(wanted[start : start + docs.MAX_BATCH])
            await self.state.save_items(items, now)
            for sku, item in items.items():
                self.skus[sku].item, self.skus[sku].item_at = item, now
        if wanted:
            self.unmapped = await self.state.unmapped_count()
            self.metrics.unmapped.labels(self.name).set(self.unmapped)

    async def find_items(self, skus: Sequence[str]) -> dict[str, str]:
        """SKU -> inventory item GID ("" for none)."""
        return await shop_reads.find_items(self.client, skus)

    # ------------------------------------------------------------------ recovery, stops

    async def recover(self) -> None:
        """Send every call of the journal again, with its key (a crash left them)."""
        journal = await self.state.journal()
        for key, call in journal.items():
            deadline = self.clock() + self.settings.push_call_timeout
            while True:
                try:
                    answer = await self.client.call(
                        "SetQuantities", docs.SET_QUANTITIES, call["variables"], SET_COST
                    )
                except InternalError:
                    codes = {"INTERNAL_SERVER_ERROR"}
                    break
                except TargetRefused as exc:
                    self._stop(exc)
                    return
                payload = answer.data.get("inventorySetQuantities") or {}
                codes = {str(e.get("code")) for e in payload.get("userErrors") or ()}
                if CONCURRENT not in codes or self.clock() > deadline:
                    break
                await asyncio.sleep(0.5)  # the first attempt is still running in the shop
            if CONCURRENT in codes:
                continue  # another process is sending it now: its answer settles it
            if not codes:
                levels = [(str(s), str(loc), int(q), int(v)) for s, loc, q, v in call["levels"]]
                states = await self.state.load(sorted({s for s, _, _, _ in levels}))
                await self.state.settle(
                    Settled(s, loc, q, v)
                    for s, loc, q, v in levels
                    if states[s].level(loc).version < v
                )
            log.info(
                "shopify push to %s: call %s of a previous run sent again: %s",
                self.name, key, ", ".join(sorted(codes)) or "applied",
            )  # fmt: skip
            await self.state.journal_done(key)

    def _stop(self, exc: TargetRefused) -> None:
        if self.stopped is None:
            log.error(
                "shopify push to %s STOPPED: %s. Check the target's access token (and the"
                " app's access scopes); other targets go on. Retried every %.0f s.",
                self.name, exc, self.settings.push_stopped_retry,
            )  # fmt: skip
        self.stopped = str(exc)
        self.dropped_while_stopped += self.levels.clear()
        self.metrics.up.labels(self.name).set(0)
        self._wake.set()

    async def _wait_resumed(self) -> None:
        await asyncio.sleep(self.settings.push_stopped_retry)
        try:
            await self.client.call("Locations", docs.LOCATIONS, {"first": 1}, 3)
        except (TargetRefused, GraphQLFailure, InternalError) as exc:
            log.warning("shopify push to %s still refused: %s", self.name, exc)
            return
        log.warning(
            "shopify push to %s resumed; %d figures were dropped while it was stopped: run"
            " `availability-ops push resync --target %s`",
            self.name, self.dropped_while_stopped, self.name,
        )  # fmt: skip
        self.stopped = None
        self.metrics.up.labels(self.name).set(1)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        self.holds = {k: until for k, until in self.holds.items() if until > now}
        self.metrics.held.labels(self.name).set(len(self.holds))
        self.metrics.pending.labels(self.name).set(len(self.levels))
        oldest = self.levels.oldest_since()
        client = self.client
        return {
            "target": self.name,
            "state": "stopped" if self.stopped else "running",
            "reason": self.stopped,
            "pending": len(self.levels),
            "oldest_pending_s": None if oldest is None else round(max(0.0, now - oldest), 3),
            "last_success": client.last_success,
            "throttled_s": round(client.throttled_seconds, 3),
            "failures": dict(sorted(client.failures.items())),
            "unmapped": self.unmapped,
            "held": len(self.holds),
            "dropped_while_stopped": self.dropped_while_stopped,
        }
