"""Static API keys, for setups without an OAuth2 server.

A key is ``avk_`` and 43 characters of URL-safe base64 (256 random bits). The
configuration holds only its SHA-256 and scopes (``AVAILABILITY_AUTH_API_KEYS`` or
the file ``AVAILABILITY_AUTH_API_KEYS_FILE``), so a leaked configuration does not
leak a key. A fast hash is enough: the key is random and long, so nothing is
gained by guessing inputs to the hash (a slow hash protects low-entropy passwords).
A presented key is found by its hash: the lookup compares hashes, never the key.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from infra.config import ApiKeySpec
from services.auth.identity import Identity
from services.auth.scopes import KNOWN_SCOPES

KEY_PREFIX = "avk_"


class ApiKeyConfigError(ValueError):
    """The configured keys cannot be used; the message says which and why."""


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


class ApiKeyBook:
    """The configured keys by hash."""

    def __init__(self, specs: Iterable[ApiKeySpec]) -> None:
        self._by_hash: dict[str, Identity] = {}
        ids: set[str] = set()
        for spec in specs:
            unknown = sorted(set(spec.scopes) - KNOWN_SCOPES)
            if unknown:
                raise ApiKeyConfigError(
                    f"API key {spec.id!r}: unknown scope(s) {', '.join(unknown)}"
                    f" (known: {', '.join(sorted(KNOWN_SCOPES))})"
                )
            if spec.id in ids:
                raise ApiKeyConfigError(f"API key id {spec.id!r} is configured twice")
            digest = spec.sha256.lower()
            if digest in self._by_hash:
                raise ApiKeyConfigError(f"API key {spec.id!r} has the hash of another key")
            ids.add(spec.id)
            self._by_hash[digest] = Identity(spec.id, frozenset(spec.scopes), "api_key")

    def __len__(self) -> int:
        return len(self._by_hash)

    def identify(self, key: str) -> Identity | None:
        return self._by_hash.get(hash_api_key(key))
