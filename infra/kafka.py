"""Plain Kafka clients the worker, the APIs and the operator CLI share: how every
client connects (:func:`kafka_client_options`, :func:`faust_broker_credentials`), where
a key's partition is, reading ranges and whole topics outside any consumer group, and
the check of the topics the worker needs."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from pydantic import SecretStr

from infra.config import Settings
from infra.secrets import SecretSource

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (None for the plaintext protocols): brokers'
    certificates checked against ``kafka_ssl_ca_file`` (else the system's CAs), host
    names checked, and the client certificate when one is configured."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    key_password = settings.kafka_ssl_key_password.get_secret_value() or None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_ca_file or None,
        certfile=settings.kafka_ssl_cert_file or None,
        keyfile=settings.kafka_ssl_key_file or None,
        password=key_password,
    )
    return context


def kafka_sasl_password(settings: Settings) -> SecretStr:
    """The SASL password: the setting's value, or read from its file (a mounted Secret,
    read anew each time a client is built; SecretNotFound names the file)."""
    if settings.kafka_sasl_password_file:
        return SecretSource(file=settings.kafka_sasl_password_file).read()
    return settings.kafka_sasl_password


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments every plain Kafka client is built with (aiokafka's
    producer, consumer, admin client and client, and kafka-python's producer take the
    same names): the bootstrap servers, the security protocol and, as it needs, the
    TLS context and the SASL mechanism and credentials. The result holds the password
    in clear: hand it to the client, never to a log line."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = kafka_sasl_password(settings).get_secret_value()
    return options


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same connection as
    :func:`kafka_client_options` (None: plaintext). Faust derives the protocol from the
    kind of credentials: SASL with a TLS context is SASL_SSL, without one SASL_PLAINTEXT;
    a TLS context alone is SSL. Faust builds its consumers, producer and topic admin
    from them."""
    from faust.auth import SASLCredentials, SSLCredentials

    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=kafka_sasl_password(settings).get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``.

    Faust's producer uses the same function for tables created with
    ``use_partitioner=True``, so an event on this partition of an input topic and
    its SKU's table entry live on the same worker.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class RangePiece:
    """A piece of a range: its records, the offset to go on from (the range's end
    when it is all read), and how many offsets at its start were gone (deleted by
    retention: before the partition's log start)."""

    records: list[Any]
    next_offset: int
    lost: int = 0


class RangeReader:
    """Reads given offset ranges of partitions, outside any consumer group, a
    bounded piece at a time."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(
        self,
        topic: str,
        partition: int,
        start: int,
        end: int,
        *,
        max_records: int,
        max_bytes: int,
        timeout: float,
    ) -> RangePiece:
        """The records with ``start <= offset < end``, at most ``max_records`` of them
        and about ``max_bytes`` of keys and values (a piece stops at the first record
        past either bound, and holds one record at least); read the rest from
        ``next_offset``. Offsets before the partition's log start are skipped and
        counted in ``lost``. TimeoutError when the piece took more than ``timeout``
        seconds (nothing is lost: ask again)."""
        async with asyncio.timeout(timeout), self._lock:
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(
                    **kafka_client_options(self._settings),
                    client_id=self._client_id,
                    enable_auto_commit=False,
                    fetch_max_wait_ms=100,
                )
                await self._consumer.start()
            consumer = self._consumer
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            log_start = (await consumer.beginning_offsets([tp]))[tp]
            lost = max(0, min(end, log_start) - start)
            start += lost
            consumer.seek(tp, start)
            records: list[Any] = []
            size = 0
            next_offset = end
            while (position := await consumer.position(tp)) < end:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                if not batches.get(tp):
                    highwater = consumer.highwater(tp)
                    if highwater is not None and position >= highwater:
                        # Nothing exists past the partition's end: the rest of the
                        # range is offsets without records.
                        break
                for record in batches.get(tp, []):
                    if record.offset >= end:
                        break
                    if records and (len(records) >= max_records or size >= max_bytes):
                        next_offset = record.offset
                        break
                    records.append(record)
                    size += len(record.key or b"") + len(record.value or b"")
                if next_offset < end:
                    break
            return RangePiece(records, next_offset, lost)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


class CommittedOffsets:
    """Reads a consumer group's committed offsets from the broker (it never joins the
    group: no subscription)."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self._settings = settings
        self._group_id = group_id
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, topic: str, partition: int) -> int | None:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **kafka_client_options(self._settings),
                group_id=self._group_id,
                client_id=f"{self._group_id}-committed",
                enable_auto_commit=False,
            )
            await consumer.start()
            self._consumer = consumer
        offset: int | None = await self._consumer.committed(TopicPartition(topic, partition))
        return offset

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


async def read_topic(
    settings: Settings, topic: str, *, timeout: float = 60.0, idle: float = 2.0
) -> list[Any]:
    """Every record of ``topic`` (all partitions, outside any consumer group), in
    partition and offset order. Reads until each partition's end offset (as of the
    start) is reached, or nothing more came for ``idle`` seconds; TimeoutError after
    ``timeout``."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.topics()  # refresh the metadata once
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        async with asyncio.timeout(timeout):
            last_new = time.monotonic()
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=200)
                if any(batches.values()):
                    for batch in batches.values():
                        records.extend(batch)
                    last_new = time.monotonic()
                    continue
                positions = [await consumer.position(tp) for tp in tps]
                reached = all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True))
                if reached or time.monotonic() - last_new >= idle:
                    break
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        await consumer.stop()


async def topic_problems(settings: Settings, expected: dict[str, int]) -> list[str]:
    """What is wrong with the topics the worker needs: missing ones, or ones whose
    partition count differs from what SKU routing assumes."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        problems = []
        for topic, partitions in expected.items():
            if topic not in existing:
                problems.append(f"topic {topic!r} does not exist")
                continue
            found = len(consumer.partitions_for_topic(topic) or ())
            if found != partitions:
                problems.append(f"topic {topic!r} has {found} partitions, expected {partitions}")
        return problems
    finally:
        await consumer.stop()
