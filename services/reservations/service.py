"""Reserve, release, extend and read reservations (README "Reservations").

A reserve request runs, in order, in three Redis round trips and one to the broker
(each a ``RedisBatch``: one round trip per master in a Redis Cluster):

1. **Claim** the reservation id (its record, state ``placing``, kept for the publish
   window): a repeat of a finished request gets the first answer, another body under
   the id ``Conflict``, a request racing one still being placed ``InProgress``. With
   the claim, the lines are noted for the worker to look at again
   (``infra.hold_checks``), should this process die, and the figures of the lines
   without a location are read (placement orders their candidates by them).
2. **Hold** every line, each with one atomic check-and-hold in Redis
   (``infra.reservation_store``), which also bumps the SKU's record version and
   announces the held figures on its channel (Watch). When a line does not fit, the
   holds placed are taken back and the answer is ``InsufficientStock``: nothing
   held, and no event published.
3. **Publish** one ``reservation.created`` per line to ``orders.reservations``, and the
   change feed's record of each SKU's held figures at the version its hold made,
   and wait for the broker's acknowledgement (bounded). If it does not come, the holds are
   taken back and the answer is ``Unavailable``.
4. **Confirm**: the holds now count until the worker folds their events (and hands
   them over) or the handover window passes; the feed's marks are set and the
   record keeps the answer.

Crash window: a hold counts for the publish window (30 s by default) until step 4
gives it the longer deadline, so an API killed between steps 2 and 4 leaves holds that
stop counting within that window, and a retry of the request after it starts again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ResponseError

from availability.events import (
    Event,
    ReservationCreated,
    ReservationReleased,
    event_to_dict,
)
from availability.holds import (
    ReservationRequest,
    held_by_location,
    line_event_id,
    most_free,
    pending_deadline,
    placement_order,
    published_deadline,
)
from availability.identifiers import format_timestamp
from infra.config import Settings
from infra.feed_record import location_record, record_key
from infra.hold_checks import HoldChecks
from infra.kafka import partition_for
from infra.redis_batch import RedisBatch
from infra.redis_client import STORE_DOWN
from infra.reservation_store import Figures, ReservationStore, ServedChange
from services.reservations.errors import (
    Conflict,
    InProgress,
    InsufficientStock,
    NotActive,
    NotFound,
    Unavailable,
)
from services.reservations.metrics import ReservationMetrics
from services.webhooks.publisher import Publisher, PublishFailed, Record

log = logging.getLogger(__name__)

REDIS_ERRORS = STORE_DOWN

PLACING = "placing"
HELD = "held"
RELEASED = "released"
EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Placed:
    sku: str
    quantity: int
    location_id: str


def _now_us() -> int:
    return time.time_ns() // 1000


class ReservationService:
    def __init__(
        self,
        settings: Settings,
        redis: ReservationStore,
        publisher: Publisher,
        metrics: ReservationMetrics,
        checks: HoldChecks,
        clock: Callable[[], int] = _now_us,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.checks = checks
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self._publish_window_ms = int(settings.reservation_publish_window * 1000)
        self._handover_window_ms = int(settings.reservation_handover_window * 1000)

    # --- reserve ---

    async def reserve(self, request: ReservationRequest) -> tuple[dict[str, Any], bool]:
        """The answer, and whether it is a repeat of an earlier one."""
        try:
            answer, repeated = await self._reserve(request)
        except InsufficientStock:
            self.metrics.outcome("insufficient_stock")
            raise
        except (Conflict, InProgress):
            self.metrics.outcome("conflict")
            raise
        except Unavailable:
            self.metrics.outcome("unavailable")
            raise
        self.metrics.outcome("repeated" if repeated else "created")
        return answer, repeated

    async def _reserve(self, request: ReservationRequest) -> tuple[dict[str, Any], bool]:
        rid = request.reservation_id
        fingerprint = request.fingerprint()
        now_us = self.clock()
        now_ms, expires_us = now_us // 1000, now_us + request.expires_in_s * 1_000_000
        expires_ms = expires_us // 1000
        # One round trip: the claim; the lines noted for the worker to look at again
        # (before any hold is placed: should this process die with a hold placed, the
        # worker still looks at the line when its pending deadline ends); the figures
        # that placement orders the candidate locations by.
        batch = RedisBatch(self.redis.client)
        claimed = self.redis.claim_in(
            batch, rid, {"fp": fingerprint, "state": PLACING}, self._publish_window_ms
        )
        noted = self.checks.note_in(
            batch,
            [(line.sku, rid) for line in request.lines],
            pending_deadline(now_ms, expires_ms, self._publish_window_ms),
        )
        unplaced = [line.sku for line in request.lines if line.location_id is None]
        figures = self.redis.figures_in(batch, unplaced)
        started = time.perf_counter()
        try:
            await batch.run()
            existing = claimed.value()
        except REDIS_ERRORS:
            raise Unavailable("the serving store (Redis) cannot be reached") from None
        started = self._took("claim", started)
        if existing is not None:
            if existing.get("fp") != fingerprint:
                raise Conflict(
                    f"reservation {rid!r} exists with another request body; use a new"
                    " reservation_id"
                )
            if existing.get("state") == PLACING:
                raise InProgress(f"reservation {rid!r} is being placed by another request; retry")
            return existing["answer"], True
        placed: list[Placed] = []
        changes: dict[str, ServedChange] = {}
        try:
            noted.value()
            order = dict(zip(unplaced, figures.value(), strict=True))
            placed = await self._hold_all(request, now_ms, expires_ms, order, changes)
            started = self._took("hold", started)
            await self._publish(
                [
                    ReservationCreated(
                        line_event_id(rid, line.sku, "created", now_us),
                        line.sku,
                        rid,
                        line.location_id,
                        line.quantity,
                        now_us,
                        expires_us,
                        request.channel,
                    )
                    for line in placed
                ],
                changes.values(),
            )
            started = self._took("publish", started)
            deadline = published_deadline(
                self.clock() // 1000, expires_ms, self._handover_window_ms
            )
            answer = {
                "reservation_id": rid,
                "channel": request.channel,
                "status": HELD,
                "created_at": format_timestamp(now_us),
                "expires_at": format_timestamp(expires_us),
                "lines": [
                    {"sku": x.sku, "quantity": x.quantity, "location_id": x.location_id}
                    for x in placed
                ],
            }
            record = {
                "fp": fingerprint,
                "state": HELD,
                "answer": answer,
                "expires_at_us": expires_us,
            }
            # One round trip: every hold's longer deadline, the feed's marks, the record.
            batch = RedisBatch(self.redis.client)
            moved = [self.redis.move_deadline_in(batch, x.sku, rid, deadline) for x in placed]
            self._mark_published_in(batch, changes.values())
            saved = self.redis.save_in(batch, rid, record, self._record_ttl_ms(expires_us))
            await batch.run()
            for pending in (*moved, saved):
                pending.value()
            self._took("confirm", started)
            return answer, False
        except BaseException as exc:
            await self._undo(rid, placed, keep_claim=isinstance(exc, REDIS_ERRORS))
            if isinstance(exc, InsufficientStock):
                # Nothing of it reached the feed: no second look is needed. (A hold of
                # it that another reservation's feed record counted is repaired by
                # that reservation's own look.)
                with contextlib.suppress(*REDIS_ERRORS):
                    await self.checks.forget([(line.sku, rid) for line in request.lines])
            if isinstance(exc, REDIS_ERRORS):
                raise Unavailable("the serving store (Redis) cannot be reached") from None
            raise

    def _took(self, phase: str, since: float) -> float:
        """Observe the phase that began at ``since``; the next one begins now."""
        now = time.perf_counter()
        self.metrics.took(phase, now - since)
        return now

    async def _hold_all(
        self,
        request: ReservationRequest,
        now_ms: int,
        expires_ms: int,
        figures: dict[str, Figures],
        changes: dict[str, ServedChange],
    ) -> list[Placed]:
        """Hold every line, all in one round trip (each line's check and hold is one
        atomic step; when one does not fit, those placed are taken back). ``figures``
        has the figures and holds of the lines without a location, which order their
        candidates; ``changes`` gets, per SKU, the change of what its record serves
        (the version and figures the change feed is to carry)."""
        rid, channel = request.reservation_id, request.channel
        deadline = pending_deadline(now_ms, expires_ms, self._publish_window_ms)
        batch = RedisBatch(self.redis.client)
        placements = []
        for line in request.lines:
            if line.location_id is not None:
                candidates = [line.location_id]
            else:
                availability, holds = figures[line.sku]
                candidates = placement_order(availability, channel, held_by_location(holds, now_ms))
            placements.append(
                self.redis.place_in(
                    batch, line.sku, rid, channel, line.quantity, candidates, now_ms, deadline
                )
            )
        try:
            await batch.run()
        except BaseException:
            # Which scripts ran is unknown: take back every line (a line not placed
            # has nothing to take back).
            await self._take_back(rid, [Placed(x.sku, x.quantity, "") for x in request.lines])
            raise
        placed: list[Placed] = []
        short = False
        failure: ResponseError | None = None
        for line, pending in zip(request.lines, placements, strict=True):
            if pending.error is not None:
                failure = failure or pending.error
                continue
            placement = pending.value()
            if placement.expired:
                self.metrics.holds_expired.inc(placement.expired)
            if placement.change is not None:
                changes[line.sku] = placement.change
            if placement.location_id is None:
                short = True
            else:
                placed.append(Placed(line.sku, line.quantity, placement.location_id))
        if failure is not None:
            await self._take_back(rid, placed)
            raise failure
        if short:
            shortfall = await self._take_back(rid, placed, shortfall_of=request)
            raise InsufficientStock(shortfall)
        return placed

    def _shortfall(
        self, request: ReservationRequest, figures: list[Figures], now_ms: int
    ) -> list[dict[str, Any]]:
        """Per line what was asked and what is available now (for the 409 body)."""
        lines = []
        for line, (availability, holds) in zip(request.lines, figures, strict=True):
            held = held_by_location(holds, now_ms)
            available = most_free(availability, request.channel, held, line.location_id)
            entry: dict[str, Any] = {"sku": line.sku, "asked": line.quantity}
            if line.location_id is not None:
                entry["location_id"] = line.location_id
            entry["available"] = available
            lines.append(entry)
        return lines

    async def _publish(self, events: Sequence[Event], changes: Iterable[ServedChange] = ()) -> None:
        """Publish the events and, in the same batch, the change feed's records of what
        the holds changed (README "Change feed"). The caller then notes that the feed
        has them (``_mark_published_in``)."""
        topic = self.settings.reservations_topic
        records = [
            Record(topic, event.sku.encode(), orjson.dumps(event_to_dict(event)))
            for event in events
        ]
        computed_at = self.clock()
        # One record per location whose holds changed, in the SKU's partition (README
        # "Change feed").
        records += [
            Record(
                self.settings.changes_topic,
                record_key(change.sku, location.location_id),
                location_record(change.sku, location, change.version, computed_at),
                partition_for(change.sku.encode(), self.settings.partitions),
            )
            for change in changes
            for location in change.served.locations
        ]
        try:
            await self.publisher.publish(records, self.settings.reservation_publish_timeout)
        except PublishFailed as exc:
            raise Unavailable(f"the broker did not take the reservation: {exc}") from None

    def _mark_published_in(self, batch: RedisBatch, changes: Iterable[ServedChange]) -> None:
        # A mark that fails is harmless (its reply is not looked at): the version goes
        # on the feed once more.
        self.redis.store.mark_published_in(batch, ((c.sku, c.version) for c in changes))

    async def _take_back(
        self,
        rid: str,
        placed: Sequence[Placed],
        shortfall_of: ReservationRequest | None = None,
    ) -> list[dict[str, Any]]:
        """Remove the holds placed, in one round trip; with ``shortfall_of``, read in
        the same round trip what its lines could have had (the 409 body)."""
        now_ms = self.clock() // 1000
        batch = RedisBatch(self.redis.client)
        for line in placed:
            self.redis.remove_in(batch, line.sku, rid, now_ms)
        figures = None
        if shortfall_of is not None:
            figures = self.redis.figures_in(batch, [line.sku for line in shortfall_of.lines])
        try:
            await batch.run()
        except REDIS_ERRORS:
            if shortfall_of is not None:
                raise
            # Redis is away: the holds stop counting at their (pending) deadline.
            log.warning("reservation %s: holds of %d line(s) left to expire", rid, len(placed))
            return []
        if shortfall_of is None or figures is None:
            return []
        return self._shortfall(shortfall_of, figures.value(), now_ms)

    async def _undo(self, rid: str, placed: Sequence[Placed], *, keep_claim: bool) -> None:
        await self._take_back(rid, placed)
        if keep_claim:
            return  # Redis is away; the claim expires with the publish window
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.forget(rid)

    # --- release, extend, read ---

    async def release(self, rid: str) -> bool:
        """Release a reservation: True when this call released it, False when it was
        released before (idempotent)."""
        record = await self._record(rid)
        if record["state"] == RELEASED:
            return False
        answer = record["answer"]
        now_us = self.clock()
        # One round trip: the lines noted (should the feed record below not make it,
        # the worker puts the freed figures on the feed when the publish window has
        # passed) and every hold removed.
        batch = RedisBatch(self.redis.client)
        noted = self.checks.note_in(
            batch,
            [(line["sku"], rid) for line in answer["lines"]],
            now_us // 1000 + self._publish_window_ms,
        )
        removed = [
            self.redis.remove_in(batch, line["sku"], rid, now_us // 1000)
            for line in answer["lines"]
        ]
        try:
            await batch.run()
            noted.value()
            changes = [change for p in removed if (change := p.value()) is not None]
        except REDIS_ERRORS:
            raise Unavailable("the serving store (Redis) cannot be reached") from None
        await self._publish(
            [
                ReservationReleased(
                    line_event_id(rid, line["sku"], "released", now_us),
                    line["sku"],
                    rid,
                    line["location_id"],
                    now_us,
                )
                for line in answer["lines"]
            ],
            changes,
        )
        record["state"] = RELEASED
        answer["status"] = RELEASED
        batch = RedisBatch(self.redis.client)
        self._mark_published_in(batch, changes)
        await self._save(rid, record, batch)
        self.metrics.releases.inc()
        return True

    async def extend(self, rid: str, expires_in_s: int) -> dict[str, Any]:
        """Move a held reservation's expiry to ``expires_in_s`` seconds from now (a newer
        ``reservation.created`` of every line, with the new ``expires_at``)."""
        record = await self._record(rid)
        now_us = self.clock()
        status = self._status(record, now_us)
        if status != HELD:
            raise NotActive(f"reservation {rid!r} is {status}; only a held one can be extended")
        answer = record["answer"]
        expires_us = now_us + expires_in_s * 1_000_000
        await self._publish(
            [
                ReservationCreated(
                    line_event_id(rid, line["sku"], "created", now_us),
                    line["sku"],
                    rid,
                    line["location_id"],
                    line["quantity"],
                    now_us,
                    expires_us,
                    answer["channel"],
                )
                for line in answer["lines"]
            ]
        )
        deadline = published_deadline(now_us // 1000, expires_us // 1000, self._handover_window_ms)
        answer["expires_at"] = format_timestamp(expires_us)
        record["expires_at_us"] = expires_us
        # One round trip: every hold's new deadline and the record.
        batch = RedisBatch(self.redis.client)
        for line in answer["lines"]:
            self.redis.move_deadline_in(batch, line["sku"], rid, deadline)
        await self._save(rid, record, batch)
        return self.view(record, now_us)

    async def get(self, rid: str) -> dict[str, Any]:
        return self.view(await self._record(rid), self.clock())

    def view(self, record: dict[str, Any], now_us: int) -> dict[str, Any]:
        return {**record["answer"], "status": self._status(record, now_us)}

    @staticmethod
    def _status(record: dict[str, Any], now_us: int) -> str:
        if record["state"] == RELEASED:
            return RELEASED
        return EXPIRED if now_us >= record["expires_at_us"] else HELD

    async def _record(self, rid: str) -> dict[str, Any]:
        try:
            record = await self.redis.load(rid)
        except REDIS_ERRORS:
            raise Unavailable("the serving store (Redis) cannot be reached") from None
        if record is None:
            raise NotFound(f"no reservation {rid!r}")
        if record.get("state") == PLACING:
            raise InProgress(f"reservation {rid!r} is being placed; retry")
        assert isinstance(record, dict)
        return record

    async def _save(self, rid: str, record: dict[str, Any], batch: RedisBatch) -> None:
        """Store the record with what ``batch`` holds already, in one round trip (the
        other commands' replies are not looked at: a mark that failed only puts a
        version on the feed once more, a hold whose deadline did not move is gone)."""
        saved = self.redis.save_in(batch, rid, record, self._record_ttl_ms(record["expires_at_us"]))
        try:
            await batch.run()
            saved.value()
        except REDIS_ERRORS:
            raise Unavailable("the serving store (Redis) cannot be reached") from None

    def _record_ttl_ms(self, expires_us: int) -> int:
        left_ms = max(0, expires_us // 1000 - self.clock() // 1000)
        return left_ms + int(self.settings.reservation_record_ttl * 1000)
