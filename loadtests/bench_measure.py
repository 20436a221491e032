"""What a benchmark measures besides its own clients: the CPU of each process of the
stack over a phase, a process's resident memory, and latency summaries (percentiles
in milliseconds)."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from loadtests.bench_cli import BenchError


def redis_pid(redis_url: str) -> int | None:
    """The Redis server's process id, if it runs on this machine."""
    client = redis.Redis.from_url(redis_url)
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}").exists() else None


def rss_bytes(pid: int) -> int:
    """The process's resident memory (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


def process_cpu_seconds(pid: int) -> float:
    """The process's CPU time so far, user and system, all threads (``/proc/PID/stat``);
    NaN if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CpuMeter.ticks  # utime + stime
    except (OSError, IndexError, ValueError):
        return math.nan


class CpuMeter:
    """Per process, over a phase: CPU time (``/proc/PID/stat``) and the time its
    threads were runnable but waited for a CPU (``/proc/PID/task/*/schedstat``), the
    direct sign of a machine with too few cores for its work. Also the machine's
    busy time (``/proc/stat``). All in percent of one core."""

    ticks = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._before: dict[str, tuple[float, float]] = {}
        self._machine_before = 0.0
        self._wall_before = 0.0

    def _process_seconds(self, pid: int) -> tuple[float, float]:
        """(CPU seconds, seconds runnable waiting for a CPU, summed over threads)."""
        cpu = process_cpu_seconds(pid)
        if math.isnan(cpu):
            return math.nan, math.nan
        waited_ns = 0
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                waited_ns += int(task.read_text().split()[1])
        return cpu, waited_ns / 1e9

    def _machine_busy(self) -> float:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total = sum(values[:8])  # user nice system idle iowait irq softirq steal
        return (total - values[3] - values[4]) / self.ticks

    def start(self) -> None:
        self._before = {name: self._process_seconds(pid) for name, pid in self.pids.items()}
        self._machine_before = self._machine_busy()
        self._wall_before = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._wall_before
        cpu: dict[str, float] = {}
        waited: dict[str, float] = {}
        for name, pid in self.pids.items():
            cpu_after, waited_after = self._process_seconds(pid)
            cpu_before, waited_before = self._before[name]
            cpu[name] = round(100 * (cpu_after - cpu_before) / wall, 1)
            waited[name] = round(100 * (waited_after - waited_before) / wall, 1)
        return {
            "cpu_percent": cpu,
            "runqueue_wait_percent": waited,
            "machine_busy_percent": round(
                100 * (self._machine_busy() - self._machine_before) / wall, 1
            ),
        }


def summarize_ms(seconds: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, float | int]:
    values = np.asarray(seconds, dtype=float) * 1000.0
    if values.size == 0:
        return {"count": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "count": int(values.size),
        "min": round(float(values.min()), 3),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(values.max()), 3),
        "mean": round(float(values.mean()), 3),
    }
