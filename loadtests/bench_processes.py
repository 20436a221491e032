"""Load processes: each load generator of a benchmark runs in a process of its own
(``multiprocessing``, spawn), so that its event loop does not queue behind another's.
``LoadProcess`` is the benchmark's end of it; a role (``async def role(job, conn)``)
is what the process does, and talks to the benchmark over the pipe in ``Message``s."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

from loadtests.bench_cli import BenchError

#: What flows over a pipe between the benchmark and a load process: (kind, payload).
Message = tuple[str, Any]


def _set_parent_death_signal() -> None:
    """Linux: the kernel sends SIGTERM to this process when the benchmark dies."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _load_process_main(
    name: str,
    role: Callable[[Any, Connection[Message, Message]], Coroutine[Any, Any, None]],
    job: Any,
    conn: Connection[Message, Message],
) -> None:
    """Entry point of a load process: runs ``role(job, conn)``; failures go to the pipe."""
    _set_parent_death_signal()
    # Ctrl-C reaches the whole foreground process group; the benchmark stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"[bench {name} %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        asyncio.run(role(job, conn))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
        raise


async def receive(conn: Connection[Message, Message], kind: str) -> Any:
    """The payload of the next message, which must be of ``kind`` (in a thread, so
    that the event loop goes on serving the gRPC calls meanwhile)."""
    got, payload = await asyncio.to_thread(conn.recv)
    if got != kind:
        raise BenchError(f"expected {kind!r} from the benchmark, got {got!r}")
    return payload


def start_of(start_wall: float) -> float:
    """The perf_counter value of wall-clock time ``start_wall``."""
    return time.perf_counter() + (start_wall - time.time())


class LoadProcess:
    """A load process and the benchmark's end of its pipe."""

    def __init__(
        self,
        name: str,
        role: Callable[[Any, Connection[Message, Message]], Coroutine[Any, Any, None]],
        job: Any,
        alive: Callable[[], None],
    ) -> None:
        self.name = name
        self._alive = alive
        context = multiprocessing.get_context("spawn")  # no inherited loops or gRPC state
        self.conn, child_conn = context.Pipe()
        self.process: SpawnProcess = context.Process(
            target=_load_process_main, args=(name, role, job, child_conn), name=name, daemon=True
        )
        self.process.start()
        child_conn.close()

    def expect(self, kind: str, timeout: float) -> Any:
        """The payload of the process's next message, which must be ``kind``."""
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            if not self.process.is_alive():
                raise BenchError(f"{self.name} exited (code {self.process.exitcode})")
            self._alive()
            if time.monotonic() > deadline:
                raise BenchError(f"no {kind!r} from {self.name} within {timeout:.0f} s")
        try:
            got, payload = self.conn.recv()
        except EOFError:
            raise BenchError(f"{self.name} exited (code {self.process.exitcode})") from None
        if got == "error":
            raise BenchError(f"{self.name} failed:\n{payload}")
        if got != kind:
            raise BenchError(f"expected {kind!r} from {self.name}, got {got!r}")
        return payload

    def has_message(self) -> bool:
        return self.conn.poll()

    def send(self, kind: str, payload: Any = None) -> None:
        self.conn.send((kind, payload))

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
