"""A development Redis: found where one answers, else started on loopback (installing
Debian's ``redis-server`` where allowed)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import IO

from dev.processes import LOOPBACK_HOSTS, StackError, popen_child, stop_process

log = logging.getLogger("dev.stack")


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
