"""Creating the service's topics (idempotent): the development stack, the tests and a
deployment's set-up job create them the same way."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.config import Settings

log = logging.getLogger(__name__)


DAY_MS = 24 * 3600 * 1000
RULES_COMPACTION_LAG_MS = 7 * DAY_MS


class TopicError(RuntimeError):
    """A topic could not be created; the message says which and why."""


def expected_partitions(settings: Settings) -> dict[str, int]:
    """Every topic the service creates, with its partition count."""
    expected = {name: settings.partitions for name in settings.partitioned_topics}
    for name in (
        settings.rules_topic,
        settings.push_policies_topic,
        settings.dlq_replays_topic,
        settings.audit_topic,
    ):
        expected[name] = 1
    return expected


async def create_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create the service's topics (idempotent). Returns the names it created."""
    wanted: dict[str, NewTopic] = {
        name: NewTopic(name, settings.partitions, settings.replication_factor)
        for name in settings.partitioned_topics
    }
    # The change feed keeps at least each SKU's latest record: a new consumer can
    # start from the beginning and end up with every SKU's current figures.
    wanted[settings.changes_topic] = NewTopic(
        settings.changes_topic,
        settings.partitions,
        settings.replication_factor,
        topic_configs={"cleanup.policy": "compact"},
    )
    for name in (settings.rules_topic, settings.push_policies_topic, settings.dlq_replays_topic):
        wanted[name] = NewTopic(
            name, 1, settings.replication_factor, topic_configs={"cleanup.policy": "compact"}
        )
    # A rule's record must outlive compaction until the audit relay has copied it
    # (infra.audit_relay): a week of relay downtime before a superseded change could
    # be compacted away unrecorded.
    for policies in (settings.rules_topic, settings.push_policies_topic):
        wanted[policies].topic_configs["min.compaction.lag.ms"] = str(RULES_COMPACTION_LAG_MS)
    wanted[settings.audit_topic] = NewTopic(
        settings.audit_topic,
        1,
        settings.replication_factor,
        topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(settings.audit_retention_days * DAY_MS),
        },
    )
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.faust_app_id}-topics",
        request_timeout_ms=int(timeout * 1000),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for name, topic in wanted.items() if name not in existing]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(missing, timeout_ms=int(timeout * 1000))
            for error in response.topic_errors:
                name, code = error[0], error[1]
                if code == 0:
                    created.append(name)
                elif code != 36:  # TOPIC_ALREADY_EXISTS: someone beat us to it
                    message = error[2] if len(error) > 2 else ""
                    raise TopicError(f"creating topic {name!r} failed: error {code} {message}")
        for name in created:
            log.info("created topic %s (%d partitions)", name, wanted[name].num_partitions)
        for meta in await admin.describe_topics(None):  # None: all topics, names none
            name = meta["topic"]
            if name in wanted and name not in created:
                have, want = len(meta["partitions"]), wanted[name].num_partitions
                if have != want:
                    log.warning("topic %s exists with %d partitions, not %d", name, have, want)
                else:
                    log.info("topic %s already exists", name)
        return created
    finally:
        await admin.close()
