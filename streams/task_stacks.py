"""Where a stuck worker waits: every task's chain of awaits, logged on SIGUSR1
(``kill -USR1 <pid>``; README "Runbook")."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def _await_chain(awaited: Any) -> list[str]:
    lines = []
    while awaited is not None:
        frame = None
        for name in ("cr_frame", "gi_frame", "ag_frame"):
            frame = frame or getattr(awaited, name, None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} {code.co_name}")
        else:
            lines.append(f"  {awaited!r}")
        following = None
        for name in ("cr_await", "gi_yieldfrom", "ag_await"):
            following = following or getattr(awaited, name, None)
        awaited = following
    return lines


def log_task_stacks() -> None:
    """Log where the worker waits: every asyncio task's chain of awaits, and that of
    every suspended coroutine of the service's own code (a framework may run one
    behind a wrapper that hides it from its task)."""
    lines = []
    tasks = asyncio.all_tasks()
    for task in tasks:
        lines.append(f"task {task.get_name()}:")
        lines.extend(_await_chain(task.get_coro()))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = tuple(
        os.path.join(root, package) + os.sep for package in ("streams", "services", "infra")
    )
    gc.unfreeze()  # frozen objects are invisible to get_objects; the timer freezes again
    for obj in gc.get_objects():
        frame = getattr(obj, "cr_frame", None) if inspect.iscoroutine(obj) else None
        if frame is not None and frame.f_code.co_filename.startswith(ours):
            lines.append(f"coroutine {frame.f_code.co_name}:")
            lines.extend(_await_chain(obj))
    log.warning("%d tasks:\n%s", len(tasks), "\n".join(lines))
