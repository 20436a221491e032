"""``python -m streams``: run one stream-processor worker."""

from __future__ import annotations

import asyncio
import logging
import sys

import faust

from infra.config import Settings, get_settings
from infra.kafka import topic_problems
from infra.logs import configure_logging, logging_config
from streams import faust_internals
from streams.app import Processor


def check_topics(settings: Settings) -> list[str]:
    # Every input topic needs the same partition count as the state table, or a
    # SKU's events and its state would live on different workers.
    expected = {topic: settings.partitions for topic in settings.partitioned_topics}
    expected[settings.rules_topic] = 1
    return asyncio.run(topic_problems(settings, expected))


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    missing = faust_internals.problems()
    if missing:
        for problem in missing:
            logging.error("cannot start: %s", problem)
        logging.error(
            "the installed faust-streaming or aiokafka differs from the versions this"
            " worker was written for (constraints.txt); see streams/faust_internals.py"
        )
        sys.exit(2)
    problems = check_topics(settings)
    if problems:
        for problem in problems:
            logging.error("cannot start: %s", problem)
        logging.error(
            "create the topics with AVAILABILITY_PARTITIONS=%d partitions (dev.stack does;"
            " see README, Configuration)",
            settings.partitions,
        )
        sys.exit(2)
    processor = Processor(settings)
    if settings.worker_metrics_port:
        processor.metrics.serve(settings.worker_metrics_port)
    worker = faust.Worker(
        processor.app,
        loglevel=settings.log_level.upper(),
        logging_config=logging_config(settings),
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
