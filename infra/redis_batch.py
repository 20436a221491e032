"""Commands of several kinds, for keys in any slots, sent in one round trip (per
master, in a Redis Cluster): a request that has to do several independent things in
Redis does them at once rather than one after another (BENCHMARKS.md "Reserve
round trips" has the figures behind this).

Each command added gives a ``Pending`` whose ``value()`` is its reply, decoded, or
raises the error Redis answered for that command alone: one command's error reply
does not hide the others' replies. A lost connection raises from ``run()``.

Commands run in the order they were added (per master). Scripts are sent as
EVALSHA; those the server does not know (a new, restarted or replaced Redis, or one
master of a cluster) are loaded and those commands sent again, followed by the reads
(``read=True``) that came after them, so that a read still sees what was written
before it; a write that did run is never run twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from infra.redis_client import RedisClient

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_UNSET: Any = object()


class Pending(Generic[T]):
    """The reply of one command of a ``RedisBatch``, once the batch has run."""

    __slots__ = ("_decode", "_reply")

    def __init__(self, decode: Callable[[Any], T]) -> None:
        self._decode = decode
        self._reply: Any = _UNSET

    def value(self) -> T:
        if self._reply is _UNSET:
            raise RuntimeError("the batch has not run")
        if isinstance(self._reply, ResponseError):
            raise self._reply
        return self._decode(self._reply)

    @property
    def error(self) -> ResponseError | None:
        """The error Redis answered this command with, if it did."""
        return self._reply if isinstance(self._reply, ResponseError) else None


class Reply(Protocol[T_co]):
    """What a batch answers for one thing asked: a command, or several combined."""

    def value(self) -> T_co: ...


class Combined(Generic[T]):
    """Several commands' replies combined into one answer."""

    __slots__ = ("_combine", "_parts")

    def __init__(self, parts: Sequence[Pending[Any]], combine: Callable[[list[Any]], T]) -> None:
        self._parts = parts
        self._combine = combine

    def value(self) -> T:
        return self._combine([part.value() for part in self._parts])


def _as_is(reply: Any) -> Any:
    return reply


class RedisBatch:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        # (the script of an EVALSHA, the command, a read?, its reply)
        self._commands: list[tuple[AsyncScript | None, tuple[Any, ...], bool, Pending[Any]]] = []

    def script(
        self,
        script: AsyncScript,
        keys: Sequence[str | bytes],
        args: Sequence[Any],
        decode: Callable[[Any], T] = _as_is,
    ) -> Pending[T]:
        pending: Pending[T] = Pending(decode)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        self._commands.append((script, command, False, pending))
        return pending

    def command(
        self, *args: Any, read: bool = False, decode: Callable[[Any], T] = _as_is
    ) -> Pending[T]:
        """A command; ``read``: it changes nothing (it may be sent again)."""
        pending: Pending[T] = Pending(decode)
        self._commands.append((None, args, read, pending))
        return pending

    def __len__(self) -> int:
        return len(self._commands)

    async def run(self) -> None:
        """Send every command added; afterwards each ``Pending`` has its reply."""
        commands = self._commands
        self._commands = []
        if not commands:
            return
        replies = await self._send([command for _, command, _, _ in commands])
        unknown = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            scripts = {id(commands[i][0]): commands[i][0] for i in unknown}
            for script in scripts.values():
                assert script is not None  # only EVALSHA answers NOSCRIPT
                # On a cluster, SCRIPT LOAD goes to every master.
                await self.client.script_load(script.script)
            again = [
                index
                for index in range(unknown[0], len(commands))
                if index in unknown or commands[index][2]
            ]
            for index, reply in zip(
                again, await self._send([commands[i][1] for i in again]), strict=True
            ):
                replies[index] = reply
        for (_, _, _, pending), reply in zip(commands, replies, strict=True):
            pending._reply = reply

    async def _send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        # redis-py's pipeline: one round trip on a single Redis; on a cluster, one per
        # master, concurrently, following redirections.
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if isinstance(self.client, RedisCluster):
            # The cluster pipeline answers a lost node with the exception in place.
            for reply in replies:
                if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                    raise reply
        return replies


async def run_alone(client: RedisClient, ask: Callable[[RedisBatch], Reply[T]]) -> T:
    """What ``ask`` adds to a batch, sent alone: its reply."""
    batch = RedisBatch(client)
    reply = ask(batch)
    await batch.run()
    return reply.value()
