"""``credentials``: make API keys, hash keys made elsewhere, and ``whoami`` (which
identity ``AVAILABILITY_TOKEN`` proves here). README "Security" explains rotation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import orjson

from infra.config import Settings
from services.auth.api_keys import KEY_PREFIX, hash_api_key, new_api_key
from services.auth.authenticator import Authenticator
from services.auth.identity import Unauthenticated
from services.auth.scopes import ALL_SCOPES

Say = Callable[[str], None]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    credentials = commands.add_parser(
        "credentials",
        help="make an API key, hash one, or show who AVAILABILITY_TOKEN is",
        description="API keys are configured by their SHA-256 (AVAILABILITY_AUTH_API_KEYS or"
        " AVAILABILITY_AUTH_API_KEYS_FILE); the key itself is shown once, to give to its"
        " client. README, Security.",
    )
    actions = credentials.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser(
        "new-key", help="a new random key and the configuration entry that admits it"
    )
    new.add_argument("--id", required=True, help="the key's id: the subject audits record")
    new.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=ALL_SCOPES,
        required=True,
        help="a scope the key holds; repeatable",
    )
    actions.add_parser("hash-key", help="the SHA-256 of a key read from standard input")
    actions.add_parser(
        "whoami", help="verify AVAILABILITY_TOKEN with this configuration; show its identity"
    )


def run(args: argparse.Namespace, settings: Settings, say: Say) -> int:
    if args.action == "new-key":
        key = new_api_key()
        entry = {"id": args.id, "sha256": hash_api_key(key), "scopes": sorted(set(args.scopes))}
        say(f"key (give it to the client; it is not stored anywhere): {key}")
        say("configuration entry (add it to AVAILABILITY_AUTH_API_KEYS or the keys file):")
        say(orjson.dumps(entry).decode())
        return 0
    if args.action == "hash-key":
        key = sys.stdin.readline().strip()
        if not key.startswith(KEY_PREFIX):
            say(f"error: an API key starts with {KEY_PREFIX!r}")
            return 2
        say(hash_api_key(key))
        return 0
    if args.action == "whoami":
        token = settings.token.get_secret_value()
        try:
            identity = Authenticator.from_settings(settings).authenticate_token(token)
        except Unauthenticated as exc:
            say(f"AVAILABILITY_TOKEN is not accepted here: {exc.reason}")
            return 1
        scopes = " ".join(sorted(identity.scopes)) or "(none)"
        say(f"subject {identity.subject} ({identity.kind}); scopes: {scopes}")
        return 0
    raise AssertionError(f"unhandled action {args.action}")
