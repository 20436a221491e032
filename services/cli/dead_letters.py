"""``dead-letters list`` and ``dead-letters replay``.

A dead letter (``infra.dead_letters``) keeps the original message's bytes and key,
where it came from and why it was refused. Replay publishes the original bytes (or,
with a patch, the original JSON object with some fields replaced) to the topic it
came from, with its original key. Each replay is noted in a compacted ledger topic
(``availability.dlq.replays``, keyed by the dead letter's ``<partition>:<offset>``)
and a dead letter in the ledger is not replayed again unless forced. Even forced, a
replay changes no figure twice: the fold ignores an ``event_id`` it has applied.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from availability.identifiers import parse_timestamp
from infra.audit import Actor, audit_record, new_audit_id
from infra.config import Settings
from infra.kafka import kafka_client_options, read_topic
from infra.topics import durability_configs
from services.cli.text import table

REPLAY_HEADER = "availability-replay-of"
PREVIEW_WIDTH = 60
TOPIC_ALREADY_EXISTS = 36
#: How much of the replayed event the audit record keeps (the dead letter has it all).
AUDITED_VALUE_CHARS = 2000

Say = Callable[[str], None]


class UsageError(ValueError):
    """Arguments that cannot be used (exit code 2)."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # in the dead-letter topic
    offset: int
    key: bytes | None
    original: bytes | None
    topic: str  # where the original came from
    source_partition: int
    source_offset: int
    reason: str
    event_id: str | None
    sku: str | None
    dead_lettered_at: str
    # Set when the original was too large for the dead letter: only its start is in
    # ``original`` (streams.dead_letters), and it cannot be replayed.
    original_size: int | None = None
    original_sha256: str | None = None

    @property
    def truncated(self) -> bool:
        return self.original_size is not None

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    def preview(self, width: int = PREVIEW_WIDTH) -> str:
        if self.original is None:
            return "(no value)"
        text = self.original[: width * 4].decode("utf-8", errors="replace")
        text = "".join(ch if ch.isprintable() else "." for ch in text)
        if self.truncated:
            text = "(truncated) " + text
        return text if len(text) <= width else text[: width - 1] + "…"

    def as_json(self, replay: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "dead_lettered_at": self.dead_lettered_at,
            "topic": self.topic,
            "partition": self.source_partition,
            "offset": self.source_offset,
            "reason": self.reason,
            "event_id": self.event_id,
            "sku": self.sku,
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "original": self.original.decode("utf-8", errors="replace")
            if self.original is not None
            else None,
            "original_truncated": self.truncated,
            "original_size": self.original_size,
            "original_sha256": self.original_sha256,
            "replayed": dict(replay) if replay is not None else None,
        }


def parse_dead_letter(
    partition: int, offset: int, key: bytes | None, value: bytes | None
) -> DeadLetter:
    """A record of the dead-letter topic; ValueError if it is not one."""
    if value is None:
        raise ValueError("no value")
    data = orjson.loads(value)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        original = (
            None
            if data.get("original_is_null")
            else base64.b64decode(data["original"], validate=True)
        )
        return DeadLetter(
            partition=partition,
            offset=offset,
            key=key,
            original=original,
            topic=str(data["topic"]),
            source_partition=int(data["partition"]),
            source_offset=int(data["offset"]),
            reason=str(data["reason"]),
            event_id=data.get("event_id"),
            sku=data.get("sku"),
            dead_lettered_at=str(data.get("dead_lettered_at", "")),
            original_size=int(data["original_size"]) if data.get("original_truncated") else None,
            original_sha256=str(data["original_sha256"])
            if data.get("original_truncated")
            else None,
        )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"missing or malformed field: {exc}") from None


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command is about; every given filter must match."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None  # substring, case-insensitive
    topic: str | None = None  # source topic, with or without the deployment's prefix
    sku: str | None = None
    since: int | None = None  # µs since the epoch
    replayed: bool | None = None  # None: either

    def matches(self, letter: DeadLetter, replayed: bool, settings: Settings) -> bool:
        if self.ids and letter.id not in self.ids:
            return False
        if self.reason is not None and self.reason.lower() not in letter.reason.lower():
            return False
        if self.topic is not None and letter.topic not in (self.topic, settings.topic(self.topic)):
            return False
        if self.sku is not None and letter.sku != self.sku:
            return False
        if self.since is not None:
            try:
                when = parse_timestamp(letter.dead_lettered_at)
            except ValueError:
                return False
            if when < self.since:
                return False
        return self.replayed is None or self.replayed == replayed


def parse_since(text: str) -> int:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is not an RFC 3339 timestamp") from None


def parse_id(text: str) -> str:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise UsageError(f"--id {text!r}: expected <partition>:<offset>, as `list` shows")
    return f"{int(partition)}:{int(offset)}"


def parse_patch(text: str) -> dict[str, Any]:
    try:
        patch = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--patch is not valid JSON: {exc}") from None
    if not isinstance(patch, dict) or not patch:
        raise UsageError("--patch must be a non-empty JSON object of fields to set")
    return patch


async def read_dead_letters(settings: Settings, say: Say) -> list[DeadLetter]:
    letters = []
    for record in await read_topic(settings, settings.dlq_topic):
        try:
            letters.append(
                parse_dead_letter(record.partition, record.offset, record.key, record.value)
            )
        except ValueError as exc:
            say(
                f"warning: {settings.dlq_topic} {record.partition}:{record.offset}"
                f" is not a dead letter ({exc}); skipped"
            )
    # Oldest first across partitions (the timestamps have one format: they sort as text).
    letters.sort(key=lambda d: (d.dead_lettered_at, d.partition, d.offset))
    return letters


async def read_replays(settings: Settings) -> dict[str, dict[str, Any]]:
    """The ledger: dead-letter id -> its latest replay."""
    replays: dict[str, dict[str, Any]] = {}
    for record in await read_topic(settings, settings.dlq_replays_topic):
        if record.key is None:
            continue
        if record.value is None:
            replays.pop(record.key.decode(), None)
        else:
            replays[record.key.decode()] = orjson.loads(record.value)
    return replays


async def list_dead_letters(
    settings: Settings, selection: Selection, *, limit: int, as_json: bool, say: Say
) -> int:
    letters = await read_dead_letters(settings, say)
    replays = await read_replays(settings)
    chosen = [d for d in letters if selection.matches(d, d.id in replays, settings)]
    shown = chosen[-limit:] if limit else chosen
    if as_json:
        for letter in shown:
            say(orjson.dumps(letter.as_json(replays.get(letter.id))).decode())
        return 0
    rows = [["ID", "DEAD-LETTERED AT", "SOURCE", "REASON", "REPLAYED", "PREVIEW"]]
    for d in shown:
        replay = replays.get(d.id)
        rows.append(
            [
                d.id,
                d.dead_lettered_at,
                f"{d.topic}[{d.source_partition}]@{d.source_offset}",
                d.reason if len(d.reason) <= 60 else d.reason[:59] + "…",
                str(replay.get("replayed_at", "yes")) if replay else "",
                d.preview(),
            ]
        )
    if len(rows) > 1:
        say(table(rows))
    more = f" (the last {len(shown)} shown; --limit 0 for all)" if len(shown) < len(chosen) else ""
    say(f"{len(chosen)} of {len(letters)} dead letters match{more}")
    return 0


def replay_value(letter: DeadLetter, patch: Mapping[str, Any] | None) -> bytes:
    """The bytes to publish; ValueError if the letter cannot be replayed as asked."""
    if letter.original is None:
        raise ValueError("the original message had no value")
    if letter.truncated:
        raise ValueError(
            f"the original was too large for the dead-letter topic: only its first"
            f" {len(letter.original)} of {letter.original_size} bytes are kept"
            f" (sha256 of the whole: {letter.original_sha256}), so it cannot be replayed;"
            " publish the event again from its source"
        )
    if patch is None:
        return letter.original
    try:
        event = orjson.loads(letter.original)
    except orjson.JSONDecodeError:
        raise ValueError("--patch needs a JSON object, and the original is not JSON") from None
    if not isinstance(event, dict):
        raise ValueError("--patch needs a JSON object, and the original is not one")
    return orjson.dumps({**event, **patch})


async def replay_dead_letters(
    settings: Settings,
    selection: Selection,
    *,
    patch: Mapping[str, Any] | None,
    all_matching: bool,
    force: bool,
    dry_run: bool,
    say: Say,
    operator: Actor | None = None,
) -> int:
    """``operator`` (who runs it, for the ledger and the audit trail) is required
    unless ``dry_run``."""
    if not selection.ids and not all_matching:
        raise UsageError(
            "name the dead letters to replay with --id, or add --all-matching to replay"
            " every one the filters match"
        )
    letters = await read_dead_letters(settings, say)
    replays = await read_replays(settings)
    chosen = [d for d in letters if selection.matches(d, d.id in replays, settings)]
    missing = selection.ids - {d.id for d in letters}
    for letter_id in sorted(missing):
        say(f"{letter_id}: no such dead letter in {settings.dlq_topic}")
    failed = len(missing)
    todo: list[tuple[DeadLetter, bytes]] = []
    skipped = 0
    for letter in chosen:
        if letter.id in replays and not force:
            skipped += 1
            say(
                f"{letter.id}: already replayed at {replays[letter.id].get('replayed_at')};"
                " skipped (--force replays again)"
            )
            continue
        if letter.topic not in settings.input_topics:
            failed += 1
            say(
                f"{letter.id}: source topic {letter.topic!r} is not an input topic"
                " of this deployment"
            )
            continue
        try:
            todo.append((letter, replay_value(letter, patch)))
        except ValueError as exc:
            failed += 1
            say(f"{letter.id}: cannot replay: {exc}")
    if dry_run:
        for letter, value in todo:
            say(f"{letter.id}: would publish to {letter.topic}: {value.decode('utf-8', 'replace')}")
        say(f"dry run: {len(todo)} would be replayed, {skipped} already replayed, {failed} refused")
        return 1 if failed else 0
    if todo:
        assert operator is not None, "a replay that publishes needs its operator"
        await ensure_replays_topic(settings)
        await publish_replays(settings, todo, patched=patch is not None, say=say, operator=operator)
    say(f"{len(todo)} replayed, {skipped} already replayed (skipped), {failed} refused")
    return 1 if failed else 0


async def publish_replays(
    settings: Settings,
    todo: Sequence[tuple[DeadLetter, bytes]],
    *,
    patched: bool,
    say: Say,
    operator: Actor,
) -> None:
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all")
    await producer.start()
    try:
        for letter, value in todo:
            origin = f"{settings.dlq_topic}:{letter.id}".encode()
            sent = await producer.send_and_wait(
                letter.topic, value=value, key=letter.key, headers=[(REPLAY_HEADER, origin)]
            )
            # Noted after the event is on its topic: a crash in between means a
            # second replay, which the fold ignores by event_id.
            note = {
                "replayed_at": datetime.now(UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "topic": letter.topic,
                "partition": sent.partition,
                "offset": sent.offset,
                "patched": patched,
                "operator": operator.subject,
            }
            await producer.send_and_wait(
                settings.dlq_replays_topic, value=orjson.dumps(note), key=letter.id.encode()
            )
            resource = f"dead_letter:{letter.id}"
            record = audit_record(
                audit_id=new_audit_id("replay"),
                actor=operator,
                action="dead_letter.replay",
                resource=resource,
                after={**note, "value": value.decode("utf-8", "replace")[:AUDITED_VALUE_CHARS]},
            )
            await producer.send_and_wait(
                settings.audit_topic, value=record, key=resource.encode(), partition=0
            )
            say(f"{letter.id}: replayed to {letter.topic}[{sent.partition}]@{sent.offset}")
    finally:
        await producer.stop()


async def ensure_replays_topic(settings: Settings) -> None:
    """The ledger topic, created (one partition, compacted) where it is missing."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        if settings.dlq_replays_topic in set(await admin.list_topics()):
            return
        topic = NewTopic(
            settings.dlq_replays_topic,
            1,
            settings.replication_factor,
            topic_configs={"cleanup.policy": "compact", **durability_configs(settings)},
        )
        response = await admin.create_topics([topic])
        for error in response.topic_errors:
            if error[1] not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(
                    f"creating {settings.dlq_replays_topic} failed: error {error[1]}"
                )
    finally:
        await admin.close()
