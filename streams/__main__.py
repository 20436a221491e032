"""``python -m streams``: run one stream-processor worker."""

from __future__ import annotations

import logging

import faust

from services.config import get_settings
from streams.app import create_processor


def main() -> None:
    settings = get_settings()
    processor = create_processor(settings)
    logging.basicConfig(level=settings.log_level.upper())
    worker = faust.Worker(processor.app, loglevel=settings.log_level.upper())
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
