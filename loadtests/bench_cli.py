"""How a benchmark's command line runs: logging, signals, a log directory kept on
failure, ``BenchError``, the failure of a step that it reports and exits 1 on, and
writing the report (JSON, a table on stdout)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("bench")


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the cleanup


def run_cli(
    log_prefix: str,
    run_benchmark: Callable[[Path], dict[str, Any]],
    keep_logs: bool,
    publish: Callable[[dict[str, Any]], None],
) -> int:
    """A benchmark's command line: logging, signals, a log directory (kept on failure
    or with ``keep_logs``), then ``publish(report)``. Returns the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="[bench %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    log_dir = Path(tempfile.mkdtemp(prefix=log_prefix))
    failed = True
    try:
        report = run_benchmark(log_dir)
        failed = False
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    finally:
        if failed or keep_logs:
            log.info("logs kept in %s", log_dir)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    publish(report)
    return 0


def write_report(
    output: Path,
    report: dict[str, Any],
    render_table: Callable[[Mapping[str, Any]], str],
    render_markdown: Callable[[Mapping[str, Any]], str] | None = None,
) -> None:
    """``report`` as JSON to ``output`` (and, with ``render_markdown``, its summary
    beside it as ``.md``); its table on stdout."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    if render_markdown is None:
        print(render_table(report), flush=True)
        log.info("results written to %s", output)
        return
    output.with_suffix(".md").write_text(render_markdown(report))
    print(render_table(report), flush=True)
    log.info("results written to %s (and %s)", output, output.with_suffix(".md"))
