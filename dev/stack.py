"""Development stack: a local Kafka-compatible broker, Redis, topics, and ``make run``.

The broker (``dev.broker``), Redis (``dev.redis_server``) and the child processes
(``dev.processes``) have their own modules; this one puts them together.

CLI::

    python -m dev.stack run [--sample-data]   # broker/Redis if needed, topics, worker, HTTP + gRPC
    python -m dev.stack up                    # broker/Redis if needed, topics; stays in foreground
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from dev.broker import DevBroker, broker_answers
from dev.credentials import developer_key, with_developer_key
from dev.processes import (
    LOOPBACK_HOSTS,
    StackError,
    dev_env,
    dev_settings,
    first_bootstrap,
    popen_child,
    stop_process,
)
from dev.redis_server import ensure_redis
from dev.shopify_dev import DevShop, ShopifyDevError, start_dev_shop
from infra.config import Settings
from infra.topics import TopicError, create_topics

log = logging.getLogger("dev.stack")

STATE_DIR = Path(".data") / "dev"


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

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.broker: DevBroker | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.children: list[_Child] = []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()
        self.fresh_broker = False
        self.shop: DevShop | None = None

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
            host, port = first_bootstrap(s.bootstrap_servers)
            if host not in LOOPBACK_HOSTS:
                raise StackError(
                    f"no broker answers at {s.bootstrap_servers}; I only start one on loopback"
                )
            _wipe_data_dir(Path(s.data_dir))
            print(f"[stack] starting a development broker on 127.0.0.1:{port}", flush=True)
            self.broker = DevBroker(port, self.state_dir).start()
            self.fresh_broker = True
            print(f"[stack] broker log: {self.broker.log_path}", flush=True)
        self.redis = ensure_redis(s.redis_url, self.state_dir)
        where = "started" if self.redis is not None else "using the"
        print(f"[stack] {where} Redis at {s.redis_url_shown}", flush=True)
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

    def start_child(self, name: str, module: str, extra_env: Mapping[str, str]) -> None:
        env = {**dev_env(), **extra_env}
        self.children.append(_Child(name, [sys.executable, "-m", module], env))

    def dead_child(self) -> str | None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                return f"{child.name} exited with code {code}"
        return None

    def shutdown(self) -> None:
        for child in reversed(self.children):
            child.stop(10.0, self.hurry)
        if self.shop is not None:
            self.shop.close()
            print("[stack] Shopify stand-in stopped", flush=True)
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


def _banner(settings: Settings, key_file: Path, shop: DevShop | None = None) -> str:
    base = f"http://127.0.0.1:{settings.http_port}"
    bearer = '-H "authorization: Bearer $AVAILABILITY_TOKEN"'
    return "\n".join(
        [
            "",
            "=" * 72,
            " availability service is running",
            f"   credential {key_file} (development key, every scope); in your shell:",
            f"              export AVAILABILITY_TOKEN=$(cat {key_file})",
            f"   HTTP API   {base}   (docs: {base}/docs)",
            f"   try        curl -s {bearer} '{base}/v1/availability/SKU-0001?channel=online'",
            f"   gRPC API   127.0.0.1:{settings.grpc_port}   (grpcurl -plaintext {bearer}"
            f" 127.0.0.1:{settings.grpc_port} list)",
            f"   broker     {settings.bootstrap_servers}   Redis {settings.redis_url_shown}",
            "   publish    .venv/bin/python -m dev.sample_data            (sample catalogue)",
            "              .venv/bin/python -m dev.sample_data --event "
            '\'{"event_id":"e1","type":"pos.sale","sku":"SKU-0001",'
            '"location_id":"STORE-001","quantity":1,"occurred_at":"2026-11-22T10:15:30.123Z"}\'',
            *(
                [
                    f"   Shopify    stand-in {shop.url} (shop {shop.standin.shop}; levels:"
                    f" curl -s {shop.url}/_standin/state)",
                    f"   push       to it (metrics :{settings.push_metrics_port}/metrics;"
                    " .venv/bin/python -m services.cli push status)",
                ]
                if shop is not None
                else ["   Shopify    no stand-in, no push (see the log above)"]
            ),
            "   stop       Ctrl-C",
            "=" * 72,
            "",
        ]
    )


def cmd_run(settings: Settings, sample_data: bool, ready_timeout: float, state_dir: Path) -> int:
    stack = _Stack(settings, state_dir)
    stack.install_signal_handlers()
    failed = False
    key, key_file = developer_key(state_dir)
    keys = [spec.model_dump(mode="json") for spec in with_developer_key(settings, key)]
    auth_env = {"AVAILABILITY_AUTH_API_KEYS": json.dumps(keys)}
    try:
        stack.start_infra()
        if stack.stop_requested.is_set():
            raise StackError("interrupted")
        stack.start_child("worker", "streams", {})
        shop_env: dict[str, str] = {}
        try:
            stack.shop = start_dev_shop(settings, state_dir)
            print(f"[stack] Shopify stand-in at {stack.shop.url}", flush=True)
            shop_env = stack.shop.env
        except ShopifyDevError as exc:
            print(f"[stack] no Shopify stand-in, so no push: {exc}", flush=True)
        # The API takes the shop's order webhooks, so it knows the targets too.
        stack.start_child("api", "services.http", {**auth_env, **shop_env})
        stack.start_child("grpc", "services.grpc", auth_env)
        if stack.shop is not None:
            stack.start_child("push", "services.push", shop_env)
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
        print(_banner(settings, key_file, stack.shop), flush=True)
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


def cmd_up(settings: Settings, state_dir: Path) -> int:
    stack = _Stack(settings, state_dir)
    stack.install_signal_handlers()
    state_file = state_dir / "stack.json"
    try:
        stack.start_infra()
        state_dir.mkdir(parents=True, exist_ok=True)
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
    up = sub.add_parser("up", help="broker/Redis if needed and topics only; stays in foreground")
    for command in (run, up):
        command.add_argument(
            "--state-dir",
            type=Path,
            default=STATE_DIR,
            help=f"logs, the development credential and state (default {STATE_DIR})",
        )
    sub.add_parser(
        "topics", help="create the service's topics on AVAILABILITY_BROKER where missing; exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[stack] %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = dev_settings()
    if args.command == "run":
        return cmd_run(settings, args.sample_data, args.ready_timeout, args.state_dir)
    if args.command == "topics":
        created = asyncio.run(create_topics(settings))
        print(f"[stack] {len(created)} topics created", flush=True)
        return 0
    return cmd_up(settings, args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
