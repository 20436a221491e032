"""``python -m services.push``: the push to Shopify (README "Shopify push").

Folds the push policies, starts one writer per configured target
(``AVAILABILITY_SHOPIFY_TARGETS``) and the change-feed consumer, serves metrics on
``AVAILABILITY_PUSH_METRICS_PORT``, and on SIGTERM lets calls under way finish and
commits what is safe before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from infra.config import Settings, get_settings
from infra.logs import configure_logging
from infra.probes import LoopHeartbeat
from infra.push_policy_log import PushPolicyLog
from infra.redis_client import connect
from services.push.engine import PushEngine
from services.push.metrics import PushMetrics
from services.push.target import PushTarget

log = logging.getLogger("services.push")


async def serve(settings: Settings) -> None:
    metrics = PushMetrics()
    heartbeat = LoopHeartbeat()
    heartbeat.start()
    if settings.push_metrics_port:
        try:
            metrics.serve(settings.push_metrics_port, heartbeat.check)
        except OSError as exc:
            log.warning(
                "push: metrics port %d: %s; running without", settings.push_metrics_port, exc
            )
    redis = connect(settings.redis_url, cluster=settings.redis_cluster)
    targets: list[PushTarget] = []

    def policies_changed(before: object, after: object) -> None:
        for target in targets:
            target.policies_changed()

    policies = PushPolicyLog(settings, on_change=policies_changed)
    targets.extend(
        PushTarget(config, settings, redis, lambda: policies.book, metrics)
        for config in settings.shopify_targets
    )
    await policies.start()
    engine = PushEngine(settings, targets, redis, metrics)
    try:
        await policies.sync(timeout=30.0)
        log.info(
            "push: %d target(s) %s, %d policies; reading %s as %s",
            len(targets), [t.name for t in targets], len(policies.book),
            settings.changes_topic, settings.push_group,
        )  # fmt: skip
        await engine.run()
    finally:
        await heartbeat.stop()
        await policies.stop()
        await redis.aclose()


def main() -> int:
    settings = get_settings()
    configure_logging(settings)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    if not settings.shopify_targets:
        log.error("push: no target configured (AVAILABILITY_SHOPIFY_TARGETS); not started")
        return 2

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(settings)

    asyncio.run(run())
    log.info("push: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
