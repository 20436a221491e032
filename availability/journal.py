"""The durable form of the fold: a journal of small entries per SKU.

A SKU's state (``availability.state``) is a fold over events in any order, so it
can be rebuilt from the events that made it. The journal keeps exactly those, one
entry each, so that what a batch writes is proportional to the events it folded,
not to the SKU's history (a SKU in a flash sale gathers thousands of sales and
reservation lines; rewriting all of them on every change was most of the fold's
cost):

- ``"<sku>"``: the SKU's *summary*: its baseline candidates per location, JSON
  ``{location: [[as_of, event_id, on_hand], ...]}`` (the settled one and every
  pending one), and under ``"@"`` what forgotten events left behind
  (``{"before": µs, "carried": [[counter, location, amount], ...], "locations":
  [...]}``); rewritten whole when a batch changes it (a SKU has a bounded number of
  locations and candidates). Written by older versions as ``{location: [as_of,
  event_id, on_hand]}``, which is still read.
- ``"<sku> <event_id>"``: every other event that changed the state, as the bytes it
  arrived with, or as its canonical JSON when those are larger than
  ``MAX_ENTRY_BYTES`` (unknown fields are ignored anyway) (a SKU never contains a
  space, so the key splits unambiguously).

A value of ``None`` deletes an entry (a tombstone): ``journal_batch`` and
``prune_entries`` delete the events the state reports as redundant (sales and
sellable returns a cut contains, superseded ``reservation.created`` and releases,
forgotten lines and ids), so that a compacted journal (one value per key,
tombstones removed) stays proportional to the live state, not to all history.

Rebuilding (``restore``) folds every entry in the order of the log, compacted or
not: the fold is order independent and idempotent, a deleted entry is redundant by
construction, and the summary's carried sums replace those of the events they
carry whichever of the two comes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from availability.display import clip, preview
from availability.events import ErpBalance, ErpBaselineReset, Event, event_to_dict, parse_event
from availability.horizon import prune, restore_carried
from availability.state import ALWAYS, SkuState, fold

SEPARATOR = " "
#: Key of the carried sums in a summary record (not a location: '@' is not in their
#: alphabet).
CARRIED_KEY = "@"
#: An event journaled as it arrived up to this size; a larger one (unknown fields
#: of megabytes) as its canonical JSON, so that every entry fits in a record.
MAX_ENTRY_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class JournalEntry:
    key: str
    value: bytes | None  # None: delete the entry


@dataclass(slots=True)
class JournalBatch:
    """What folding a SKU's events gave: the entries that make the change durable
    (in the order to write them), and the events whose fold failed, by their index
    in the input, with the exception (the state holds nothing of them)."""

    entries: list[JournalEntry] = field(default_factory=list)
    failed: list[tuple[int, Exception]] = field(default_factory=list)


def event_key(sku: str, event_id: str) -> str:
    return sku + SEPARATOR + event_id


def summary_value(state: SkuState) -> bytes:
    document: dict[str, Any] = {}
    for location_id in sorted(set(state.settled) | set(state.pending)):
        candidates = list(state.pending.get(location_id, {}).values())
        settled = state.settled.get(location_id)
        if settled is not None:
            candidates.append(settled)
        document[location_id] = [[c.as_of, c.event_id, c.on_hand] for c in candidates]
    if state.carried or state.carried_locations or state.forgotten_before > -(2**63):
        document[CARRIED_KEY] = {
            "before": state.forgotten_before,
            "carried": [[counter, loc, amount] for (counter, loc), amount in state.carried.items()],
            "locations": sorted(state.carried_locations),
        }
    return orjson.dumps(document)


def _entry_value(event: Event, raw: bytes) -> bytes:
    return raw if len(raw) <= MAX_ENTRY_BYTES else orjson.dumps(event_to_dict(event))


def journal_batch(
    state: SkuState,
    events: Sequence[tuple[Event, bytes]],
    *,
    settle_before: int = ALWAYS,
) -> JournalBatch:
    """Fold ``(event, the bytes it arrived as)`` pairs into ``state``.

    Returns the journal entries that make the change durable, in the order to write
    them (all on the SKU's partition): the events, then the summary, then the
    deletions, so that a deletion is never durable before what contains it. An
    event whose fold raises is rolled back (``SkuState.rollback``) and reported in
    ``failed``; the others are folded as if it had never come.
    """
    sku = state.sku
    batch = JournalBatch()
    entries = batch.entries
    settled: list[str] = []
    summary_changed = False
    undo = state.begin()
    try:
        for index, (event, raw) in enumerate(events):
            mark, settled_mark = len(undo), len(settled)
            try:
                if not fold(state, event, settled, settle_before=settle_before):
                    continue
                value = None if type(event) is ErpBalance else _entry_value(event, raw)
            except Exception as exc:  # a bug, not bad input: see SkuState.rollback
                state.rollback(mark)
                del settled[settled_mark:]
                batch.failed.append((index, exc))
                continue
            if value is not None:
                entries.append(JournalEntry(event_key(sku, event.event_id), value))
            if isinstance(event, ErpBalance | ErpBaselineReset):
                summary_changed = True
    finally:
        state.end()
    if summary_changed:
        entries.append(JournalEntry(sku, summary_value(state)))
    entries.extend(JournalEntry(event_key(sku, event_id), None) for event_id in settled)
    return batch


def prune_entries(
    state: SkuState, *, settle_before: int, forget_before: int
) -> list[JournalEntry] | None:
    """``horizon.prune`` and the entries that make it durable: the summary, then the
    deletions (in the order ``prune`` gives). None when nothing changed; the state
    is left as it was if pruning raises."""
    undo = state.begin()
    try:
        pruned = prune(state, settle_before=settle_before, forget_before=forget_before)
    except Exception:
        state.rollback(0)
        raise
    finally:
        del undo
        state.end()
    if not pruned:
        return None
    entries = []
    if pruned.summary_changed:
        entries.append(JournalEntry(state.sku, summary_value(state)))
    entries.extend(JournalEntry(event_key(state.sku, e), None) for e in pruned.redundant)
    return entries


class CorruptEntry(ValueError):
    """A journal entry that cannot be read back (never written by this code)."""


def restore(
    states: dict[str, SkuState],
    key: str,
    value: bytes | None,
    *,
    settle_before: int = ALWAYS,
) -> str:
    """Fold one journal entry into ``states`` (creating the SKU's state); returns the
    SKU. A deletion changes nothing (see the module docstring)."""
    sku, _, event_id = key.partition(SEPARATOR)
    state = states.get(sku)
    if state is None:
        state = states[sku] = SkuState(sku)
    if value is None:
        return sku
    try:
        if event_id:
            event: Event = parse_event(value)
            if event.sku != sku or event.event_id != event_id:
                raise CorruptEntry(
                    f"entry {preview(key)} holds event {preview(event.event_id)} of {event.sku}"
                )
            fold(state, event, settle_before=settle_before)
        else:
            _restore_summary(state, orjson.loads(value), settle_before)
    except CorruptEntry:
        raise
    except Exception as exc:
        raise CorruptEntry(f"entry {preview(key)} cannot be read: {clip(str(exc), 200)}") from exc
    return sku


def _restore_summary(state: SkuState, document: dict[str, Any], settle_before: int) -> None:
    sku = state.sku
    for location_id, candidates in document.items():
        if location_id == CARRIED_KEY:
            restore_carried(
                state,
                int(candidates["before"]),
                {(str(c), str(loc)): int(n) for c, loc, n in candidates["carried"]},
                [str(loc) for loc in candidates["locations"]],
            )
            continue
        if candidates and isinstance(candidates[0], int):
            candidates = [candidates]  # the format before baseline candidates
        for as_of, balance_id, on_hand in candidates:
            balance = ErpBalance(balance_id, sku, location_id, on_hand, as_of)
            fold(state, balance, settle_before=settle_before)
