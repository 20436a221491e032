"""The durable form of the fold: a journal of small entries per SKU.

A SKU's state (``availability.state``) is a fold over events in any order, so it
can be rebuilt from the events that made it. The journal keeps exactly those, one
entry each, so that what a batch writes is proportional to the events it folded,
not to the SKU's history (a SKU in a flash sale gathers thousands of sales and
reservation lines; rewriting all of them on every change was most of the fold's
cost):

- ``"<sku>"``: the SKU's ERP baselines, JSON ``{location: [as_of, event_id,
  on_hand]}``; rewritten whole when a batch changes one (a SKU has a bounded number
  of locations, and an ERP sync sends all of them at once);
- ``"<sku> <event_id>"``: every other event that changed the state, as the bytes it
  arrived with (a SKU never contains a space, so the key splits unambiguously).

A value of ``None`` deletes an entry (a tombstone): ``journal_batch`` deletes the
events the fold reports as redundant (sales and sellable returns a newer ERP
baseline contains, superseded ``reservation.created``), so that a compacted
journal (one value per key, tombstones removed) stays proportional to the live
state, not to all history.

Rebuilding (``restore``) folds every entry in whatever order it comes, deleted
ones included or not: the fold is order independent and idempotent, and a deleted
entry is redundant by construction, so the state is the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from availability.display import clip, preview
from availability.events import ErpBalance, Event, parse_event
from availability.state import SkuState, fold

SEPARATOR = " "


@dataclass(frozen=True, slots=True)
class JournalEntry:
    key: str
    value: bytes | None  # None: delete the entry


def event_key(sku: str, event_id: str) -> str:
    return sku + SEPARATOR + event_id


def baselines_value(state: SkuState) -> bytes:
    return orjson.dumps(
        {loc: [b.as_of, b.event_id, b.on_hand] for loc, b in state.baselines.items()}
    )


def journal_batch(
    state: SkuState, events: Iterable[tuple[Event, bytes]]
) -> list[JournalEntry] | None:
    """Fold ``(event, the bytes it arrived as)`` pairs into ``state``.

    Returns the journal entries that make the change durable, in the order to write
    them (all on the SKU's partition): the events, then the baselines, then the
    deletions, so that a deletion is never durable before what contains it. None
    when the state did not change.
    """
    sku = state.sku
    entries: list[JournalEntry] = []
    settled: list[str] = []
    baselines_changed = False
    for event, raw in events:
        if not fold(state, event, settled):
            continue
        if type(event) is ErpBalance:
            baselines_changed = True
        else:
            entries.append(JournalEntry(event_key(sku, event.event_id), raw))
    if not entries and not baselines_changed:
        return None
    if baselines_changed:
        entries.append(JournalEntry(sku, baselines_value(state)))
    entries.extend(JournalEntry(event_key(sku, event_id), None) for event_id in settled)
    return entries


class CorruptEntry(ValueError):
    """A journal entry that cannot be read back (never written by this code)."""


def restore(states: dict[str, SkuState], key: str, value: bytes | None) -> str:
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
            fold(state, event)
        else:
            for location_id, (as_of, balance_id, on_hand) in orjson.loads(value).items():
                fold(state, ErpBalance(balance_id, sku, location_id, on_hand, as_of))
    except CorruptEntry:
        raise
    except Exception as exc:
        raise CorruptEntry(f"entry {preview(key)} cannot be read: {clip(str(exc), 200)}") from exc
    return sku
