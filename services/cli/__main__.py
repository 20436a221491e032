"""``python -m services.cli COMMAND``: operator commands (``--help`` lists them).

Exit codes: 0 done, 1 the command ran and found a problem (or timed out), 2 bad
arguments or input that could not be used at all, or a command that writes run
without an ``ops`` credential in ``AVAILABILITY_TOKEN`` (``services.cli.operator``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from availability.drift import ExportFormatError
from infra.audit import audit_record, new_audit_id, record_actions
from infra.config import Settings, get_settings
from infra.kafka import topic_problems
from infra.topics import TopicError, create_topics, expected_partitions
from services.cli import credentials
from services.cli import push as push_commands
from services.cli.baseline import reset_baseline, show_baselines
from services.cli.dead_letters import (
    Selection,
    UsageError,
    list_dead_letters,
    parse_id,
    parse_patch,
    parse_since,
    replay_dead_letters,
)
from services.cli.drift import drift, drift_job
from services.cli.operator import NotAuthorised, operator_actor
from services.cli.rebuild import rebuild

T = TypeVar("T")


def say(text: str) -> None:
    print(text, flush=True)


def fail(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.cli",
        description="Operator commands of the availability service. Connection settings"
        " come from the AVAILABILITY_* environment variables (README, Configuration).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rebuild_cmd = commands.add_parser(
        "rebuild",
        help="rewrite every serving record in Redis from the stream processor's state",
        description="Drops the serving layer's completeness marks: every worker rewrites"
        " the records of its partitions from its state within a heartbeat. Reads go on"
        " meanwhile (README, Serving layer). Waits until the layer is complete.",
    )
    rebuild_cmd.add_argument(
        "--no-wait", action="store_true", help="return once the rebuild is requested"
    )
    rebuild_cmd.add_argument(
        "--timeout", type=_positive, default=600.0, help="seconds to wait (default 600)"
    )
    letters = commands.add_parser(
        "dead-letters",
        help="list dead letters, replay them to their source topic",
        description="Dead letters are events the stream processor refused (README, Dead"
        " letters). Filters combine: every one given must match.",
    )
    letter_commands = letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_cmd = letter_commands.add_parser(
        "list", help="a table (or JSON lines) of dead letters, oldest first"
    )
    _add_filters(list_cmd)
    list_cmd.add_argument(
        "--limit", type=_count, default=50, help="show the last N that match (default 50; 0: all)"
    )
    list_cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    replay_cmd = letter_commands.add_parser(
        "replay",
        help="publish dead letters again to their source topic (each once, unless --force)",
        description="Publishes the original message (same key, same bytes; with --patch the"
        " JSON object with the given fields set) to the topic it came from, and notes the"
        " replay in the ledger topic availability.dlq.replays. A dead letter already"
        " replayed is skipped unless --force; the fold ignores an event_id it has applied,"
        " so even a forced replay changes no figure twice.",
    )
    _add_filters(replay_cmd)
    replay_cmd.add_argument(
        "--all-matching",
        action="store_true",
        help="replay every dead letter the filters match (without --id, required)",
    )
    replay_cmd.add_argument(
        "--patch",
        type=_patch,
        metavar="JSON",
        help='fields to set in each original event, e.g. \'{"location_id": "STORE-001"}\'',
    )
    replay_cmd.add_argument("--force", action="store_true", help="replay again if replayed")
    replay_cmd.add_argument(
        "--dry-run", action="store_true", help="show what would be published, publish nothing"
    )
    drift_cmd = commands.add_parser(
        "drift",
        help="compare a full ERP balance export with the service's on-hand",
        description="Reads the export (CSV with a header, or JSON lines; fields sku,"
        " location_id, on_hand, as_of), folds the service's state back from the stream"
        " processor's journal, and reports every SKU-location whose on-hand differs by"
        " more than the threshold, with its likely cause (README, Drift check). Exit"
        " code 0: no drift and every line read; 1: drift, or lines that could not be"
        " read (reported by number; the rest is checked); 2: the file cannot be used.",
    )
    drift_cmd.add_argument("export", type=Path, help="the ERP export file")
    drift_cmd.add_argument(
        "--format", choices=("csv", "jsonl"), help="default: from the file name's extension"
    )
    drift_cmd.add_argument(
        "--threshold", type=_count, default=0, help="units of difference tolerated (default 0)"
    )
    drift_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    drift_cmd.add_argument("--output", type=Path, help="also write the JSON report here")
    drift_cmd.add_argument(
        "--no-publish",
        action="store_true",
        help="do not store the counts for the availability_drift_sku_locations gauge",
    )
    baseline = commands.add_parser(
        "baseline",
        help="show a SKU's ERP baselines; reset a location's baseline from a fresh count",
        description="A location's baseline is its latest ERP balance (README, Baseline"
        " reset). `show` folds it back from the workers' journal; `reset` publishes an"
        " erp.baseline_reset event: the count becomes the baseline as of now, and the"
        " voided balances can never be the baseline again.",
    )
    baseline_commands = baseline.add_subparsers(dest="action", required=True, metavar="ACTION")
    show_cmd = baseline_commands.add_parser(
        "show", help="the baselines the workers hold for a SKU (every location, or one)"
    )
    show_cmd.add_argument("--sku", required=True)
    show_cmd.add_argument("--location", help="only this location")
    show_cmd.add_argument("--json", action="store_true", help="print JSON")
    reset_cmd = baseline_commands.add_parser(
        "reset",
        help="replace a location's baseline with a fresh count dated now",
        description="Publishes an erp.baseline_reset event to the ERP topic. Without"
        " --void, the current baseline is voided when it is dated in the future (it"
        " hides every later sale); with --void, the named balances are.",
    )
    reset_cmd.add_argument("--sku", required=True)
    reset_cmd.add_argument("--location", required=True)
    reset_cmd.add_argument("--on-hand", type=_count, required=True, help="the fresh count")
    reset_cmd.add_argument(
        "--void",
        dest="voids",
        action="append",
        metavar="EVENT_ID",
        help="a balance that must never be the baseline again; repeatable",
    )
    commands.add_parser(
        "drift-job",
        help="run the drift check every AVAILABILITY_DRIFT_INTERVAL seconds (0: off)",
        description="The periodic drift check: AVAILABILITY_DRIFT_EXPORT is checked every"
        " AVAILABILITY_DRIFT_INTERVAL seconds with AVAILABILITY_DRIFT_THRESHOLD, and the"
        " counts published for Prometheus. Off (exits at once) while the interval is 0.",
    )
    topics = commands.add_parser(
        "topics",
        help="create the service's topics (idempotent; a deployment's set-up job runs it)",
        description="Creates every topic the service uses that does not exist yet, with"
        " AVAILABILITY_PARTITIONS partitions, AVAILABILITY_REPLICATION_FACTOR replicas and"
        ' the retention and compaction README "Configuration" lists; existing topics'
        " are left as they are. Exit code 1 when an existing topic has another partition"
        " count than the workers need (they would refuse to start). Kafka's own ACLs"
        " decide who may create topics: no AVAILABILITY_TOKEN is needed.",
    )
    topic_commands = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topic_commands.add_parser("create", help="create the topics that are missing")
    credentials.add_parser(commands)
    push_commands.add_parser(commands)
    return parser


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id",
        dest="ids",
        action="append",
        type=_id,
        default=[],
        metavar="P:O",
        help="a dead letter's id (its partition:offset in the dead-letter topic); repeatable",
    )
    parser.add_argument("--reason", help="the reason contains this text (any case)")
    parser.add_argument("--topic", help="source topic, with or without AVAILABILITY_TOPIC_PREFIX")
    parser.add_argument("--sku", help="the event's sku")
    parser.add_argument(
        "--since", type=_since, help="dead-lettered at or after this RFC 3339 timestamp"
    )
    state = parser.add_mutually_exclusive_group()
    state.add_argument(
        "--replayed", dest="replayed", action="store_const", const=True, help="only replayed ones"
    )
    state.add_argument(
        "--not-replayed",
        dest="replayed",
        action="store_const",
        const=False,
        help="only ones never replayed",
    )


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser raising UsageError (argparse reports it, exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


_id = _argument(parse_id)
_since = _argument(parse_since)
_patch = _argument(parse_patch)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(
        ids=frozenset(args.ids),
        reason=args.reason,
        topic=args.topic,
        sku=args.sku,
        since=args.since,
        replayed=args.replayed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        return asyncio.run(run(args, settings))
    except UsageError as exc:
        parser.error(str(exc))  # exits 2
    except NotAuthorised as exc:
        fail(f"not authorised: {exc}")
        return 2
    except ExportFormatError as exc:
        fail(str(exc))
        return 2
    except KafkaError as exc:
        fail(f"the broker at {settings.bootstrap_servers} cannot be used: {exc!r}")
    except RedisError as exc:
        fail(f"Redis at {settings.redis_url_shown} cannot be used: {exc}")
    except TimeoutError:
        fail("gave up waiting for the broker or Redis")
    return 1


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "credentials":
        return credentials.run(args, settings, say)
    if args.command == "push":
        return await push_commands.run(args, settings, say)
    if args.command == "rebuild":
        rebuilder = operator_actor(settings)
        resource = "serving:all"
        await record_actions(
            settings,
            [(resource, audit_record(audit_id=new_audit_id("rebuild"), actor=rebuilder,
                                     action="serving.rebuild", resource=resource))],
        )  # fmt: skip
        return await rebuild(settings, wait=not args.no_wait, timeout=args.timeout, say=say)
    if args.command == "dead-letters" and args.action == "list":
        return await list_dead_letters(
            settings, _selection(args), limit=args.limit, as_json=args.json, say=say
        )
    if args.command == "dead-letters" and args.action == "replay":
        operator = None if args.dry_run else operator_actor(settings)
        return await replay_dead_letters(
            settings,
            _selection(args),
            patch=args.patch,
            all_matching=args.all_matching,
            force=args.force,
            dry_run=args.dry_run,
            say=say,
            operator=operator,
        )
    if args.command == "drift":
        return await drift(
            settings,
            args.export,
            given_format=args.format,
            threshold=args.threshold,
            as_json=args.json,
            output=args.output,
            publish=not args.no_publish,
            say=say,
        )
    if args.command == "baseline" and args.action == "show":
        return await show_baselines(
            settings, sku=args.sku, location_id=args.location, as_json=args.json, say=say
        )
    if args.command == "baseline" and args.action == "reset":
        resetter = operator_actor(settings)
        done = await reset_baseline(
            settings,
            sku=args.sku,
            location_id=args.location,
            on_hand=args.on_hand,
            voids=args.voids,
            operator=resetter.subject,
            say=say,
        )
        resource = f"baseline:{args.sku}@{args.location}"
        after = {"on_hand": args.on_hand, "voids": args.voids}
        await record_actions(
            settings,
            [(resource, audit_record(audit_id=new_audit_id("baseline"), actor=resetter,
                                     action="baseline.reset", resource=resource, after=after))],
        )  # fmt: skip
        return done
    if args.command == "drift-job":
        return await drift_job(settings, say)
    if args.command == "topics" and args.action == "create":
        try:
            created = await create_topics(settings)
        except TopicError as exc:
            fail(str(exc))
            return 1
        say(f"created {len(created)} topic(s): {', '.join(created)}" if created
            else "every topic exists already")  # fmt: skip
        # A topic with another partition count would stop every worker at start (a
        # SKU's events and its state share a partition number): fail here, before a
        # deployment's upgrade touches the running processes.
        problems = await topic_problems(settings.bootstrap_servers, expected_partitions(settings))
        for problem in problems:
            fail(f"{problem} (AVAILABILITY_PARTITIONS={settings.partitions})")
        return 1 if problems else 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
