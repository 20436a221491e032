"""The development stack's child processes and their environment: the settings a
child sees, the development broker's overrides, starting and stopping process groups,
and small helpers the broker and Redis starters share."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final, TypeVar

from pydantic import SecretStr

from infra.config import Settings

T = TypeVar("T")

#: Values the development broker needs (see shared notes "faust-on-tansu"). Applied to
#: the child processes only where the variable is not already set in the environment.
DEV_OVERRIDES: dict[str, str] = {
    "AVAILABILITY_BROKER_SESSION_TIMEOUT": "10",
    "AVAILABILITY_BROKER_HEARTBEAT_INTERVAL": "1",
    # The development broker leaves a SyncGroup unanswered when the group's leader
    # died; the client gives up and rejoins after this many seconds.
    "AVAILABILITY_BROKER_REQUEST_TIMEOUT": "20",
    "AVAILABILITY_FETCH_MAX_WAIT_MS": "100",
    "AVAILABILITY_PRODUCER_MAX_BATCH_SIZE": "1",
    # One broker, no replication (production: 3 and 2).
    "AVAILABILITY_REPLICATION_FACTOR": "1",
    "AVAILABILITY_MIN_INSYNC_REPLICAS": "1",
}

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class StackError(RuntimeError):
    """A development-stack step failed; the message says what to do."""


# --------------------------------------------------------------------------- helpers


ENV_PREFIX: Final[str] = str(Settings.model_config.get("env_prefix", "AVAILABILITY_"))


def dev_field_overrides() -> dict[str, str]:
    """:data:`DEV_OVERRIDES` as ``Settings`` field names (values as strings)."""
    return {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in DEV_OVERRIDES.items()
        if key.startswith(ENV_PREFIX)
    }


def dev_settings() -> Settings:
    """``Settings`` from the environment, with :data:`DEV_OVERRIDES` where the
    environment does not set them: what the development stack itself uses (its topics
    get the development broker's replication of 1)."""
    values = {
        name: value
        for name, value in dev_field_overrides().items()
        if f"{ENV_PREFIX}{name.upper()}" not in os.environ
    }
    return Settings(**values)  # type: ignore[arg-type]  # strings, parsed by pydantic


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)  # pydantic-settings parses complex fields as JSON


def settings_env(settings: Settings) -> dict[str, str]:
    """Every field of ``settings`` as ``AVAILABILITY_*`` variables, so that a child
    process sees exactly the same configuration."""
    values = settings.model_dump(mode="json")
    for name in values:
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):  # dumped as "**********"
            values[name] = secret.get_secret_value()
    return {f"{ENV_PREFIX}{name.upper()}": _env_value(value) for name, value in values.items()}


def process_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without stray ``AVAILABILITY_*`` variables, plus
    :func:`settings_env`, unbuffered Python output and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings_env(settings))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def dev_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) with :data:`DEV_OVERRIDES` filled in
    where unset, and unbuffered Python output (children's logs stream through pipes)."""
    env = dict(os.environ if base is None else base)
    for key, value in DEV_OVERRIDES.items():
        env.setdefault(key, value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel send SIGTERM to the child if we die (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def popen_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group (so the whole group can be signalled),
    tied to our lifetime on Linux; stderr is merged into ``stdout``.

    Call it from the main thread: the kernel's parent-death signal fires when the
    *thread* that forked the child exits."""
    return subprocess.Popen(
        list(args),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
    )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def stop_process(
    proc: subprocess.Popen[bytes],
    timeout: float = 10.0,
    *,
    hurry: threading.Event | None = None,
) -> int:
    """SIGTERM the process group, wait up to ``timeout`` s (less if ``hurry`` is set),
    then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            time.sleep(0.05)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    else:
        # The leader is gone; make sure nothing it forked lingers in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def run_coro_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(f"//{hostport}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def first_bootstrap(bootstrap: str) -> tuple[str, int]:
    return split_hostport(bootstrap.split(",")[0].strip(), 9092)


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
