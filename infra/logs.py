"""Logging of every process: one JSON object per line, or text for people
(``AVAILABILITY_LOG_FORMAT``).

A JSON line has ``ts`` (UTC, ms), ``level``, ``logger``, ``message``, the process id,
and ``event_id`` and ``sku`` (and ``topic``, ``partition``, ``offset``) where the code
logging it passes them with ``extra=``; an exception's traceback is in ``exc``.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

from infra.config import Settings

#: Attributes a log call may add with ``extra=`` that the JSON line carries.
CONTEXT_FIELDS = ("event_id", "sku", "topic", "partition", "offset", "worker_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the process: every logger (Faust's,
    uvicorn's, aiokafka's) goes through one handler on standard output."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["default"]},
        # uvicorn's own loggers (log_config replaces its defaults): through the root.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
