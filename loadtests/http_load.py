"""HTTP load for the benchmark: ``wrk`` runs for the HTTP read path and the reserve
endpoint's closed loop, ``h2load`` runs for the gRPC one, the freshness prober and
the reserve endpoint's open loop (load processes of
``loadtests.bench_processes.LoadProcess``).

``wrk`` (Debian package ``wrk``) is the load generator of the HTTP read path: a C
program whose own cost per request is small beside the Python server's, so the
figures are the server's. Its Lua script picks a random SKU per request (and 100
random SKUs per batch) and prints a JSON summary when done.

``h2load`` (Debian package ``nghttp2-client``) plays the same part for gRPC, which is
HTTP/2: it posts one ready-made gRPC frame (``GetAvailability`` of one SKU) over and
over, and logs every request's latency. It cannot vary the request, so every call
reads the same SKU; it sees HTTP statuses only, not gRPC's, so the benchmark checks
the answer to that request itself before it loads a server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import shutil
import subprocess
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from loadtests.bench_cli import BenchError
from loadtests.bench_processes import Message, receive, start_of
from loadtests.workload import location_name, sku_name

WRK_THREADS = 1  # one core for the load, the other for the server under test
POLL_BACKOFF = 0.05

_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK-JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,'
    .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

_WRK_SINGLE = """
math.randomseed(%(seed)d)
local skus = %(skus)d
request = function()
  return wrk.format("GET", string.format("/v1/availability/SKU-%%06d?channel=online",
                                         math.random(0, skus - 1)))
end
"""

_WRK_BATCH = """
math.randomseed(%(seed)d)
local skus = %(skus)d
local bodies = {}
for b = 1, 200 do
  local names = {}
  for i = 1, %(batch)d do
    names[i] = string.format('"SKU-%%06d"', math.random(0, skus - 1))
  end
  bodies[b] = '{"channel":"online","skus":[' .. table.concat(names, ",") .. ']}'
end
local n = 0
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n %% 200 + 1
  return wrk.format("POST", "/v1/availability:batch", nil, bodies[n])
end
"""

# A cart of one line per request, a random SKU, no location (the service places it);
# every request a new reservation id: each is a reserve, never an idempotent repeat.
_WRK_RESERVE = """
math.randomseed(%(seed)d)
local skus = %(skus)d
local n = 0
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format(
    '{"reservation_id":"%(prefix)s-%%d","channel":"online","expires_in_s":900,'
    .. '"lines":[{"sku":"SKU-%%06d","quantity":1}]}', n, math.random(0, skus - 1))
  return wrk.format("POST", "/v1/reservations", nil, body)
end
"""

_WRK_DELAY = """
delay = function()
  return %(delay_ms)d
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed: apt-get install wrk (make bench does)")
    return found


@dataclass(frozen=True)
class LoadRun:
    """What one run of a load generator (wrk, h2load) measured."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(self.rate),
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def run_wrk(
    url: str,
    *,
    kind: str,
    skus: int,
    connections: int,
    seconds: float,
    seed: int,
    authorization: str,
    batch: int = 100,
    delay_ms: int | None = None,
    prefix: str = "wrk",
) -> LoadRun:
    """One ``wrk`` run against ``url``: ``kind`` is ``single``, ``batch`` or
    ``reserve`` (reservation ids ``{prefix}-1``, ``-2``, ...: a new prefix per run); with
    ``delay_ms`` each connection pauses that long between requests (a fixed rate of
    about ``connections / delay`` requests/s). ``authorization`` is sent with every
    request (the scripts' own headers add to wrk's, never replace them)."""
    script = {"single": _WRK_SINGLE, "batch": _WRK_BATCH, "reserve": _WRK_RESERVE}[kind]
    text = script % {"seed": seed, "skus": skus, "batch": batch, "prefix": prefix}
    if delay_ms is not None:
        text += _WRK_DELAY % {"delay_ms": delay_ms}
    text += _WRK_DONE
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(text)
        script_path = handle.name
    try:
        command = [
            wrk_binary(),
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-H",
            f"Authorization: {authorization}",
            "-s",
            script_path,
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        Path(script_path).unlink(missing_ok=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")
    data = json.loads(line.removeprefix("WRK-JSON "))
    errors = sum(
        data[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return LoadRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def h2load_binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise BenchError(
            "h2load is not installed: apt-get install nghttp2-client (make bench does)"
        )
    return found


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (not compressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def run_h2load_grpc(
    address: str,
    method: str,
    request: bytes,
    *,
    connections: int,
    seconds: float,
    authorization: str,
) -> LoadRun:
    """One ``h2load`` run: ``connections`` clients, each with one call in flight, call
    ``method`` (``/package.Service/Method``) at ``address`` (host:port) with the
    serialized ``request`` for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as work:
        body = Path(work) / "request.bin"
        body.write_bytes(grpc_frame(request))
        latencies_log = Path(work) / "requests.tsv"
        command = [
            h2load_binary(),
            f"--clients={connections}",
            "--max-concurrent-streams=1",
            f"--threads={WRK_THREADS}",
            f"--duration={max(1, round(seconds))}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
            f"--header=authorization: {authorization}",
            f"--data={body}",
            f"--log-file={latencies_log}",
            f"http://{address}{method}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0 or not latencies_log.exists():
            raise BenchError(
                f"h2load failed (exit {done.returncode}): {done.stderr or done.stdout}"
            )
        starts, durations, errors = [], [], 0
        for line in latencies_log.read_text().splitlines():
            start_us, status, duration_us = line.split("\t")
            if status != "200":
                errors += 1
            starts.append(int(start_us))
            durations.append(int(duration_us))
    if not durations:
        raise BenchError(f"h2load made no request: {done.stdout}")
    durations.sort()

    def percentile(p: float) -> float:
        return durations[min(len(durations) - 1, math.ceil(p / 100 * len(durations)) - 1)] / 1000

    elapsed = (max(s + d for s, d in zip(starts, durations, strict=True)) - min(starts)) / 1e6
    return LoadRun(
        requests=len(durations),
        seconds=elapsed,
        errors=errors,
        p50_ms=percentile(50),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        max_ms=durations[-1] / 1000,
    )


# --------------------------------------------------------------------------- freshness


@dataclass(frozen=True)
class ProbeJob:
    """Follows the schedule of ``bench_grpc_loads.run_producer`` (event n at start + n / rate,
    a sale of 1 unit at SKU ``n % skus``, location ``(n // skus) % locations``)."""

    base_url: str
    skus: int
    locations: int
    rate: float
    duration: float
    probes_per_second: float
    poll_interval: float
    timeout: float
    seed: int
    authorization: str  # the Authorization header of every request


@dataclass
class ProbeResult:
    events: array[int]  # the probed event numbers
    seen: array[float]  # time.time() of the first answer showing the event; NaN if never
    requests: int
    errors: int
    cpu_seconds: float


def _on_hand_at(body: bytes, location_id: str) -> int | None:
    for location in orjson.loads(body)["locations"]:
        if location["location_id"] == location_id:
            return int(location["on_hand"])
    return None


async def run_http_prober(job: ProbeJob, conn: Connection[Message, Message]) -> None:
    """For a sample of the producer's events, polls ``GET /v1/availability/{sku}`` from
    the event's scheduled publish time until the answer shows it (its location's
    ``on_hand`` at or below what the event leads to)."""
    total = round(job.rate * job.duration)
    step = max(1, round(job.rate / job.probes_per_second))
    rng = random.Random(job.seed)
    sampled = [n for n in range(rng.randrange(step), total, step)]
    slots = job.skus * job.locations
    counters = {"requests": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": job.authorization}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def get(sku: str) -> bytes | None:
            counters["requests"] += 1
            try:
                async with session.get(f"{job.base_url}/v1/availability/{sku}") as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        counters["errors"] += 1
                        return None
                    return body
            except aiohttp.ClientError:
                counters["errors"] += 1
                return None

        # What each probed slot shows before the first sale: the sales count from there.
        baseline: dict[int, int] = {}
        for n in sampled:
            slot = (n % job.skus) * job.locations + (n // job.skus) % job.locations
            if slot in baseline:
                continue
            body = await get(sku_name(n % job.skus))
            shown = None if body is None else _on_hand_at(body, location_name(slot % job.locations))
            if shown is None:
                raise BenchError(f"no baseline for {sku_name(n % job.skus)}")
            baseline[slot] = shown
        counters.update(requests=0, errors=0)
        gc.collect()
        gc.freeze()
        conn.send(("ready", None))
        start = start_of(await receive(conn, "go"))
        cpu_before = time.process_time()
        seen = array("d", [math.nan]) * len(sampled)

        async def probe(index: int, n: int) -> None:
            sku_i, location_j = n % job.skus, (n // job.skus) % job.locations
            slot = sku_i * job.locations + location_j
            expected = baseline[slot] - (n // slots) - 1
            scheduled = start + n / job.rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            give_up = time.perf_counter() + job.timeout
            while (now := time.perf_counter()) < give_up:
                body = await get(sku_name(sku_i))
                if body is not None:
                    shown = _on_hand_at(body, location_name(location_j))
                    if shown is not None and shown <= expected:
                        seen[index] = time.time()
                        return
                # Polls thin out as a probe ages (a resolution of 5% of its latency):
                # probes of a backlog would otherwise load the server they measure.
                await asyncio.sleep(max(job.poll_interval, POLL_BACKOFF * (now - scheduled)))

        await asyncio.gather(*(probe(i, n) for i, n in enumerate(sampled)))
        result = ProbeResult(
            events=array("q", sampled),
            seen=seen,
            requests=counters["requests"],
            errors=counters["errors"],
            cpu_seconds=time.process_time() - cpu_before,
        )
    conn.send(("result", result))


# --------------------------------------------------------------------------- open loop

RESERVE_EXPIRES_IN_S = 900
WARM_UP_REQUESTS = 50
REQUEST_TIMEOUT_S = 10.0
FAILURES_KEPT = 5


@dataclass(frozen=True)
class OpenLoopJob:
    base_url: str
    authorization: str
    skus: int
    rate: float
    duration: float
    seed: int
    prefix: str  # of the reservation ids


@dataclass
class OpenLoopResult:
    latencies: array[float]  # seconds from the scheduled send to the answer; NaN: none
    service_times: array[float]  # seconds from the actual send to the answer
    statuses: dict[str, int]
    sent: int
    seconds: float  # from the first scheduled send to the last answer
    max_behind_schedule: float
    cpu_seconds: float
    failures: list[str]  # the first few answers other than 201: when, status, body


def reserve_body(reservation_id: str, sku: str) -> bytes:
    return orjson.dumps(
        {
            "reservation_id": reservation_id,
            "channel": "online",
            "expires_in_s": RESERVE_EXPIRES_IN_S,
            "lines": [{"sku": sku, "quantity": 1}],
        }
    )


async def run_open_loop(job: OpenLoopJob, conn: Connection[Message, Message]) -> None:
    """Reserve requests on a fixed schedule (``job.rate`` a second), each on its own
    task, whatever the answers; a random SKU and a new reservation id each."""
    rng = random.Random(job.seed)
    headers = {"Authorization": job.authorization, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)  # as many connections as requests in flight
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        url = f"{job.base_url}/v1/reservations"

        failures: list[str] = []

        async def reserve(reservation_id: str) -> int:
            body = reserve_body(reservation_id, sku_name(rng.randrange(job.skus)))
            async with session.post(url, data=body) as answer:
                text = await answer.read()
                if answer.status != 201 and len(failures) < FAILURES_KEPT:
                    failures.append(f"{time.time():.3f} {answer.status} {text[:200]!r}")
                return answer.status

        for n in range(WARM_UP_REQUESTS):  # connect, and warm both ends up
            status = await reserve(f"{job.prefix}-warm-{n}")
            if status != 201:
                raise BenchError(f"a warm-up reserve was answered {status}")
        gc.collect()
        gc.freeze()
        conn.send(("ready", None))
        start = start_of(await receive(conn, "go"))
        total = max(1, round(job.rate * job.duration))
        latencies = array("d", [math.nan]) * total
        service_times = array("d", [math.nan]) * total
        statuses: Counter[str] = Counter()
        behind = 0.0
        last_done = [start]
        cpu_before = time.process_time()

        async def one(n: int, scheduled: float) -> None:
            sent = time.perf_counter()
            try:
                status = await reserve(f"{job.prefix}-{n}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
                latencies[n] = math.inf  # unanswered: worse than any answer
                return
            done = time.perf_counter()
            statuses[str(status)] += 1
            latencies[n] = done - scheduled
            service_times[n] = done - sent
            last_done[0] = max(last_done[0], done)

        tasks: set[asyncio.Task[None]] = set()
        for n in range(total):
            scheduled = start + n / job.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            behind = max(behind, -delay)
            task = asyncio.create_task(one(n, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*tasks)
        result = OpenLoopResult(
            latencies=latencies,
            service_times=service_times,
            statuses=dict(statuses),
            sent=total,
            seconds=last_done[0] - start,
            max_behind_schedule=behind,
            cpu_seconds=time.process_time() - cpu_before,
            failures=failures,
        )
    conn.send(("result", result))
