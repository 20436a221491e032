"""Publishing a webhook's records (events, dead letters) and waiting, for a bounded
time, until the broker has acknowledged every one.

Shopify waits 5 s for an answer. ``publish`` gives up after its timeout and raises
``PublishFailed``, so the webhook is answered 503 and Shopify retries it. Records
already handed to the producer may still reach the broker after that; the retry then
publishes the same events again, which the fold applies once (their event ids come
from the order, not from the delivery).

The producer is started when the API starts (without holding the start up) and again
on the next webhook whenever that failed, e.g. while the broker was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from infra.config import Settings
from infra.kafka import kafka_client_options

log = logging.getLogger(__name__)

#: How long the start-up attempt may take before the API goes on without it.
WARM_UP_TIMEOUT = 5.0


class PublishFailed(Exception):
    """The broker did not acknowledge in time or cannot be reached."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None  # None: the producer's partitioner decides by key


class Publisher:
    def __init__(self, settings: Settings, purpose: str = "shopify-webhooks") -> None:
        self.settings = settings
        self.purpose = purpose  # in the client id and the log lines
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._warm_up: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Connect in the background, so the first webhook need not."""
        self._warm_up = asyncio.create_task(self._start_quietly(), name=f"{self.purpose}-producer")

    async def _start_quietly(self) -> None:
        try:
            async with asyncio.timeout(WARM_UP_TIMEOUT):
                await self._started()
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning(
                "%s producer: broker not reachable yet (%r); retried per request", self.purpose, exc
            )

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                **kafka_client_options(self.settings),
                acks="all",
                max_batch_size=self.settings.producer_max_batch_size,
                client_id=f"{self.settings.faust_app_id}-{self.purpose}",
            )
            try:
                await producer.start()
            except BaseException:
                # Also when cancelled by the caller's timeout: stop it in the
                # background, so the answer is not held up by the cleanup.
                self._stop_later(producer)
                raise
            self._producer = producer
            return producer

    def _stop_later(self, producer: AIOKafkaProducer) -> None:
        task = asyncio.get_running_loop().create_task(_stop(producer))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def publish(self, records: Sequence[Record], timeout: float) -> None:
        """Every record acknowledged by the broker (acks=all) within ``timeout``
        seconds, or ``PublishFailed``."""
        if not records:
            return
        try:
            async with asyncio.timeout(timeout):
                producer = await self._started()
                sent = [
                    await producer.send(
                        record.topic, record.value, key=record.key, partition=record.partition
                    )
                    for record in records
                ]
                await asyncio.gather(*sent)
        except TimeoutError:
            raise PublishFailed(f"the broker did not acknowledge within {timeout:g} s") from None
        except (KafkaError, OSError) as exc:
            log.warning("%s producer: publishing failed: %r", self.purpose, exc)
            raise PublishFailed("the broker cannot be reached") from None

    async def close(self) -> None:
        if self._warm_up is not None:
            self._warm_up.cancel()
            await asyncio.gather(self._warm_up, return_exceptions=True)
        if self._producer is not None:
            await _stop(self._producer)
            self._producer = None
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)


async def _stop(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()
