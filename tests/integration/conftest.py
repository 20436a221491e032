"""Fixtures of the integration tests: a development broker and Redis for the session,
fresh topics per test, and service processes that are stopped after the test.

- ``dev_broker`` (session): a :class:`dev.stack.DevBroker` on a free loopback port.
- ``redis_url`` (session): ``AVAILABILITY_REDIS_URL`` or the default; started if nothing
  answers there, stopped at the end only if started here.
- ``redis_cluster`` (session): a :class:`dev.redis_cluster.DevRedisCluster` of 3 masters
  on free loopback ports (Debian's ``redis-server``, installed where allowed), started on
  first use by the Redis Cluster tests only.
- ``settings`` (function): a ``Settings`` with a unique ``topic_prefix``, the session's
  broker and Redis, the development overrides, 4 partitions, ``data_dir`` and free
  HTTP/gRPC ports; its topics are created.
- ``start_service`` (function): ``start_service("streams", settings)`` starts
  ``python -m streams`` with :func:`dev.stack.process_env` and returns a
  :class:`support.ProcessHandle`; all are terminated after the test, and their log
  tails printed if the test failed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dev.broker import DevBroker
from dev.processes import process_env, stop_process
from dev.redis_cluster import DevRedisCluster, cluster_ports
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.store import AvailabilityStore
from infra.topics import create_topics
from tests.integration.grpc_support import apis as apis  # the fixture, for the gRPC tests
from tests.integration.support import (
    ENV_PREFIX,
    TEST_API_KEY,
    ProcessHandle,
    api_key_spec,
    dev_field_overrides,
    drop_keys,
    free_port,
)

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(_reports_key, {})
    return any(r.failed for r in reports.values())


@pytest.fixture(scope="session")
def dev_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """A fresh broker for the session, never on 9092 (so ``make run`` may run alongside)."""
    port = free_port()
    while port == 9092:
        port = free_port()
    with DevBroker(port, tmp_path_factory.mktemp("broker")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get(f"{ENV_PREFIX}REDIS_URL") or str(
        Settings.model_fields["redis_url"].default
    )
    proc = ensure_redis(url, tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        if proc is not None:
            stop_process(proc, 5.0)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRedisCluster]:
    with DevRedisCluster(cluster_ports(3), tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


def make_settings(broker: str, redis_url: str, data_dir: Path, **fields: Any) -> Settings:
    """Settings for one test: unique topic prefix, dev overrides (unless set in the
    environment), 4 partitions, free HTTP/gRPC ports. ``fields`` override anything."""
    values: dict[str, Any] = {
        name: value
        for name, value in dev_field_overrides().items()
        if f"{ENV_PREFIX}{name.upper()}" not in os.environ
    }
    values.update(
        broker=broker,
        redis_url=redis_url,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        data_dir=str(data_dir),
        http_port=free_port(),
        grpc_port=free_port(),
        worker_metrics_port=free_port(),
        grpc_metrics_port=free_port(),
        auth_api_keys=[api_key_spec()],
        token=TEST_API_KEY,
    )
    values.update(fields)
    return Settings(**values)


@pytest.fixture
async def settings(dev_broker: DevBroker, redis_url: str, tmp_path: Path) -> Settings:
    s = make_settings(dev_broker.url, redis_url, tmp_path / "data")
    await create_topics(s)
    return s


class StartService:
    """``start_service(module, settings, ...)`` starts ``python -m module``; every
    process it started is terminated after the test (or by ``stop_all()``)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.handles: list[ProcessHandle] = []

    def __call__(
        self,
        module: str,
        settings: Settings,
        *,
        name: str | None = None,
        args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> ProcessHandle:
        base = name or module.rsplit(".", 1)[-1]
        taken = {h.name for h in self.handles}
        unique, n = base, 1
        while unique in taken:
            n += 1
            unique = f"{base}-{n}"
        handle = ProcessHandle(unique, module, process_env(settings, extra_env), self.logs, args)
        self.handles.append(handle.start())
        return handle

    def stop_all(self) -> None:
        for handle in reversed(self.handles):
            handle.terminate()


@pytest.fixture
def start_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartService]:
    starter = StartService(tmp_path / "logs")
    yield starter
    starter.stop_all()
    if _failed(request.node):
        for handle in starter.handles:
            print(f"\n==== {handle.name} (exit {handle.returncode}) {handle.log_path} ====")
            print(handle.tail(80))


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(dev_broker: DevBroker, redis_url: str, tmp_path: Path) -> SettingsFactory:
    """``settings_factory(**fields)``: another Settings (own prefix) on the same broker;
    call ``await create_topics(s)`` yourself."""
    counter = iter(range(1, 1_000_000))

    def factory(**fields: Any) -> Settings:
        return make_settings(
            dev_broker.url, redis_url, tmp_path / f"data-{next(counter)}", **fields
        )

    return factory


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[AvailabilityStore]:
    """A store on the test's Redis prefix; its keys are dropped afterwards."""
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    try:
        yield store
    finally:
        await drop_keys(store)
        await store.close()
