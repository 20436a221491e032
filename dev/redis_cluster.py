"""A development Redis Cluster on loopback: N masters from Debian's ``redis-server``
(installed where allowed, as for :mod:`dev.redis_server`), no replicas, joined with
``redis-cli --cluster create``. The integration tests start one per session."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from dev.processes import StackError, popen_child, stop_process
from dev.redis_server import _redis_server_path, redis_answers


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` loopback ports free right now, each with its cluster bus port (+10000)
    free too; Redis refuses a cluster port above 55535."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 45000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class DevRedisCluster:
    """``with DevRedisCluster(ports, workdir) as cluster:`` a cluster of len(ports)
    nodes: masters, each with ``replicas`` replicas (redis-cli picks which port is
    which); ``cluster.url`` names the first node (the others are discovered)."""

    def __init__(
        self,
        ports: Sequence[int],
        workdir: Path,
        start_timeout: float = 20.0,
        replicas: int = 0,
    ) -> None:
        if len(ports) < 3 * (1 + replicas):
            raise StackError("a Redis Cluster needs at least 3 masters")
        self.ports = list(ports)
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.replicas = replicas
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node_url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on ``port``; its cluster config file is kept,
        so a restarted master rejoins with its slots (its data is gone: no saving)."""
        server = _redis_server_path()
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            server,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", "2000",
            "--dir", str(node_dir),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        with (node_dir / "redis.log").open("ab") as out:
            self.procs[port] = popen_child(args, stdout=out)
        deadline = time.monotonic() + self.start_timeout
        while not redis_answers(self.node_url(port)):
            proc = self.procs[port]
            if proc.poll() is not None:
                raise StackError(f"redis-server exited with code {proc.returncode} (port {port})")
            if time.monotonic() > deadline:
                raise StackError(f"redis-server on port {port} did not answer PING")
            time.sleep(0.05)

    def kill_node(self, port: int) -> None:
        """SIGKILL the node on ``port``: a crash, nothing flushed or handed over."""
        proc = self.procs.pop(port, None)
        if proc is not None:
            proc.kill()
            proc.wait(5.0)

    def stop_node(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None:
            stop_process(proc, 5.0)

    def wait_ok(self) -> None:
        """Until every node reports ``cluster_state:ok``."""
        import redis

        deadline = time.monotonic() + self.start_timeout
        while True:
            states = []
            for port in self.ports:
                try:
                    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
                    try:
                        states.append(client.cluster("INFO").get("cluster_state"))
                    finally:
                        client.close()
                except Exception:
                    states.append(None)
            if all(state == "ok" for state in states):
                return
            if time.monotonic() > deadline:
                raise StackError(f"the Redis Cluster is not ok: {states}")
            time.sleep(0.1)

    def __enter__(self) -> DevRedisCluster:
        try:
            for port in self.ports:
                self.start_node(port)
            cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            create = [cli, "--cluster", "create", *nodes, "--cluster-yes"]
            create += ["--cluster-replicas", str(self.replicas)]
            done = subprocess.run(
                create,
                capture_output=True,
                timeout=self.start_timeout,
            )
            if done.returncode != 0:
                raise StackError(f"redis-cli --cluster create failed: {done.stdout[-500:]!r}")
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for port in list(self.procs):
            self.stop_node(port)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
