"""The private parts of Faust and aiokafka the worker relies on, in one place, and the
start-up check that they are still there.

Each is used for a reason given where it is used (``streams.app``, ``streams.kafka``).
An upgrade that renames one would otherwise fail quietly: a lag of 0 read from a
missing attribute, partitions never resumed, a table that forgets no SKU after a
rebalance. ``problems()`` looks for each of them (methods on their class, instance
attributes in the constructor that sets them, since no instance exists before the
worker starts), and ``python -m streams`` refuses to start (exit code 2) naming any
that is missing (``streams.__main__``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.stores import memory
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


def _method(owner: type, name: str) -> Callable[[], bool]:
    return lambda: callable(getattr(owner, name, None))


def _assigned(owner: type, name: str, where: str = "__init__") -> Callable[[], bool]:
    """Whether ``owner.<where>`` (its source) assigns ``self.<name>``."""

    def check() -> bool:
        function = getattr(owner, where, None)
        try:
            source = inspect.getsource(cast(Any, function))
        except (OSError, TypeError):
            return False
        return f"self.{name}:" in source or f"self.{name} =" in source

    return check


def _reads(owner: type, name: str, where: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return f"self.{name}" in inspect.getsource(getattr(owner, where))
        except (OSError, TypeError, AttributeError):
            return False

    return check


#: (what, why the worker needs it, the check)
REQUIRED: tuple[tuple[str, str, Callable[[], bool]], ...] = (
    (
        "faust Consumer._committed_offset",
        "the committed offsets: consumer lag and the first offset after an assignment",
        _assigned(faust_consumer.Consumer, "_committed_offset"),
    ),
    (
        "faust Consumer._paused_partitions",
        "resuming input partitions Faust left paused",
        _assigned(faust_consumer.Consumer, "_paused_partitions", "_reset_state"),
    ),
    (
        "faust Consumer._acked and _acked_index",
        "acking a skipped range the worker read and folded itself",
        lambda: (
            _assigned(faust_consumer.Consumer, "_acked")()
            and _assigned(faust_consumer.Consumer, "_acked_index")()
            and _reads(faust_consumer.Consumer, "_acked", "_new_offset")()
        ),
    ),
    (
        "faust memory Store._key_partition",
        "the partition of each SKU, by which a rebalance drops the SKUs moved away",
        _assigned(memory.Store, "_key_partition", "__post_init__"),
    ),
    (
        "faust memory Store.data",
        "the table's states as a plain dict",
        _assigned(memory.Store, "data", "__post_init__"),
    ),
    (
        "faust aiokafka Producer._ensure_producer",
        "the aiokafka producer, to send journal entries in whole batches",
        _method(faust_aiokafka.Producer, "_ensure_producer"),
    ),
    (
        "faust AIOKafkaConsumerThread._create_worker_consumer",
        "setting the consumer's fetch wait",
        _method(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    ),
    (
        "faust aiokafka Consumer._new_consumer_thread",
        "installing the consumer thread that sets the fetch wait",
        _method(faust_aiokafka.Consumer, "_new_consumer_thread"),
    ),
    (
        "faust App._new_transport",
        "installing the worker's transport",
        _method(faust.App, "_new_transport"),
    ),
    (
        "faust Table._serializer_from_type",
        "raw keys and values in the table's changelog (the journal)",
        _method(faust.Table, "_serializer_from_type"),
    ),
    (
        "aiokafka AIOKafkaConsumer._fetch_max_wait_ms",
        "the fetch wait (AVAILABILITY_FETCH_MAX_WAIT_MS), read when the consumer starts",
        lambda: (
            _assigned(AIOKafkaConsumer, "_fetch_max_wait_ms")()
            and _reads(AIOKafkaConsumer, "_fetch_max_wait_ms", "start")()
        ),
    ),
    (
        "aiokafka AIOKafkaProducer.create_batch and send_batch",
        "sending journal entries in whole batches",
        lambda: (
            _method(AIOKafkaProducer, "create_batch")()
            and _method(AIOKafkaProducer, "send_batch")()
        ),
    ),
)


def problems(required: tuple[tuple[str, str, Callable[[], bool]], ...] = REQUIRED) -> list[str]:
    """What is missing, one line each (empty: all there)."""
    missing = []
    for what, why, check in required:
        try:
            present = check()
        except Exception:
            present = False
        if not present:
            missing.append(f"{what} is missing (used for {why})")
    return missing


def committed_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """The offsets Faust's consumer last committed (or found committed), per partition."""
    return cast(Mapping[TP, "int | None"], consumer._committed_offset)


def mark_range_done(consumer: Any, tp: TP, start: int, end: int) -> None:
    """Ack offsets ``start`` to ``end - 1`` in Faust's consumer, as its ``ack`` does
    for a message: the worker read and folded them itself. Faust commits an offset
    only when every one before it since the last commit is acked; a range its
    consumer skipped never is, so without this the partition's commits stop for
    good. An offset acked already, or below the committed one, is left alone (a
    duplicate in the acked list would make Faust commit one offset at a time)."""
    committed = consumer._committed_offset.get(tp)
    acked_index = consumer._acked_index[tp]
    acked = consumer._acked[tp]
    for offset in range(start, end):
        if (committed is None or offset >= committed) and offset not in acked_index:
            acked_index.add(offset)
            acked.append(offset)


def set_committed_offset(consumer: Any, tp: TP, offset: int) -> None:
    """Faust's note of a partition's committed offset, where it has none after an
    assignment (seen after a worker restart: it then commits one offset at a time)."""
    consumer._committed_offset[tp] = offset


def paused_partitions(consumer: Any) -> set[TP]:
    return cast(set[TP], consumer._paused_partitions)


def key_partitions(store: Any) -> dict[str, int]:
    """The memory store's key -> changelog partition map."""
    return cast(dict[str, int], store._key_partition)


def store_dict(store: Any) -> dict[str, Any]:
    return cast(dict[str, Any], store.data)


def aiokafka_producer(producer: Any) -> AIOKafkaProducer:
    """The aiokafka producer inside Faust's (started if it was not)."""
    return cast(AIOKafkaProducer, producer._ensure_producer())
