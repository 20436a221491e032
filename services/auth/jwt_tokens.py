"""OAuth2 client-credentials bearer tokens: JWTs verified against configured keys.

The signing keys come from a JWKS document (``AVAILABILITY_AUTH_JWT_JWKS_URL``, the
authorisation server's ``jwks_uri``, or ``AVAILABILITY_AUTH_JWT_JWKS_FILE``),
refreshed in the background every ``AVAILABILITY_AUTH_JWKS_REFRESH_INTERVAL``
seconds and at once (at most every ``MIN_REFRESH_INTERVAL``) when a token names a key
id that is not known yet, so a key rotated in at the server is picked up.

A token is accepted when its signature verifies with an algorithm on the allow-list
(asymmetric only: never ``none``, never a shared-secret HMAC that a public key
could be mistaken for), its ``iss`` and ``aud`` are the configured ones, and it has
not expired (``exp`` is required; ``AVAILABILITY_AUTH_JWT_LEEWAY`` seconds of clock
skew are tolerated). The subject is ``sub`` (or ``client_id``, ``azp``); scopes come
from ``scope`` (space-separated, RFC 8693) or ``scp`` (a list or a string); scopes
this service does not know are ignored. A verified token is remembered until it
expires, so a client that sends the same token on every call pays for one check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import orjson

from services.auth.identity import Identity, Unauthenticated
from services.auth.scopes import KNOWN_SCOPES

log = logging.getLogger(__name__)

#: Algorithms that may be allowed: public-key signatures only.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Seconds between two refreshes asked for by unknown key ids.
MIN_REFRESH_INTERVAL = 10.0
#: Largest JWKS document read (bytes), and how long a fetch may take (seconds).
MAX_JWKS_BYTES = 1024 * 1024
JWKS_FETCH_TIMEOUT = 5.0
#: Verified tokens remembered at most (the oldest half is dropped when full).
TOKEN_CACHE_SIZE = 10_000


class JwtConfigError(ValueError):
    """The JWT settings cannot be used; the message says why."""


def parse_algorithms(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise JwtConfigError("AVAILABILITY_AUTH_JWT_ALGORITHMS names no algorithm")
    refused = sorted(set(names) - ASYMMETRIC_ALGORITHMS)
    if refused:
        raise JwtConfigError(
            f"AVAILABILITY_AUTH_JWT_ALGORITHMS: {', '.join(refused)} not allowed"
            f" (public-key algorithms only: {', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
        )
    return names


class SigningKeys:
    """The JWKS document's keys by key id, loaded from a URL or a file."""

    def __init__(self, *, url: str = "", file: str = "", refresh_interval: float = 300.0) -> None:
        if bool(url) == bool(file):
            raise JwtConfigError(
                "set exactly one of AVAILABILITY_AUTH_JWT_JWKS_URL and"
                " AVAILABILITY_AUTH_JWT_JWKS_FILE"
            )
        if url and not url.startswith(("https://", "http://")):
            raise JwtConfigError(f"AVAILABILITY_AUTH_JWT_JWKS_URL must be http(s), got {url!r}")
        self.url = url
        self.file = file
        self.refresh_interval = refresh_interval
        self.keys: dict[str, jwt.PyJWK] = {}
        self.loaded_at: float | None = None
        self.last_error: str | None = None
        self._refresh = asyncio.Event()
        self._last_attempt = 0.0

    @property
    def source(self) -> str:
        return self.url or self.file

    def _read(self) -> bytes:
        if self.file:
            return Path(self.file).read_bytes()[: MAX_JWKS_BYTES + 1]
        request = urllib.request.Request(self.url, headers={"accept": "application/json"})
        with urllib.request.urlopen(request, timeout=JWKS_FETCH_TIMEOUT) as answer:
            return bytes(answer.read(MAX_JWKS_BYTES + 1))

    def load(self) -> None:
        """Read the document now (blocking); keeps the old keys when it fails."""
        self._last_attempt = time.monotonic()
        try:
            raw = self._read()
            if len(raw) > MAX_JWKS_BYTES:
                raise ValueError(f"the document exceeds {MAX_JWKS_BYTES} bytes")
            document = orjson.loads(raw)
            if not isinstance(document, dict):
                raise ValueError("the document is not a JSON object")
            keys = self.parse(document)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("JWKS from %s not loaded: %s", self.source, self.last_error)
            return
        self.keys = keys
        self.loaded_at = time.time()
        self.last_error = None
        log.info("JWKS from %s: %d signing key(s)", self.source, len(keys))

    @staticmethod
    def parse(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
        """Usable signing keys by id. Keys of other uses or unknown types are skipped."""
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys") or []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                log.warning("JWKS: key %r skipped: %s", entry.get("kid"), exc)
                continue
            keys[str(entry.get("kid") or "")] = key
        return keys

    def find(self, kid: str | None) -> jwt.PyJWK | None:
        key = self.keys.get(kid or "")
        if key is None and not kid and len(self.keys) == 1:
            key = next(iter(self.keys.values()))  # one key and a token without kid
        if key is None and kid:
            self.request_refresh()
        return key

    def request_refresh(self) -> None:
        if time.monotonic() - self._last_attempt >= MIN_REFRESH_INTERVAL:
            self._refresh.set()

    async def run(self) -> None:
        """Refresh the keys in the background, until cancelled."""
        while True:
            await asyncio.to_thread(self.load)
            self._refresh.clear()
            wait = self.refresh_interval if self.keys else MIN_REFRESH_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), wait)


class JwtVerifier:
    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        leeway: float,
    ) -> None:
        if not issuer or not audience:
            raise JwtConfigError(
                "JWT verification needs AVAILABILITY_AUTH_JWT_ISSUER and"
                " AVAILABILITY_AUTH_JWT_AUDIENCE: without them a token issued for another"
                " service would be accepted"
            )
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.leeway = leeway
        self._verified: dict[str, tuple[Identity, float]] = {}

    def verify(self, token: str) -> Identity:
        known = self._verified.get(token)
        if known is not None:
            identity, expires = known
            if time.time() < expires + self.leeway:
                return identity
            del self._verified[token]
        identity, expires = self._verify(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            for stale in list(self._verified)[: TOKEN_CACHE_SIZE // 2]:
                del self._verified[stale]
        self._verified[token] = (identity, expires)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("the bearer token is neither an API key nor a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise Unauthenticated(f"the token's algorithm {str(algorithm)[:20]!r} is not accepted")
        kid = header.get("kid")
        key = self.keys.find(kid if isinstance(kid, str) else None)
        if key is None:
            if not self.keys.keys:
                raise Unauthenticated("the signing keys are not loaded yet; try again shortly")
            raise Unauthenticated("the token is signed with a key this service does not know")
        if key.algorithm_name and key.algorithm_name != algorithm:
            raise Unauthenticated("the token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not issued for this service (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token's issuer is not accepted (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token lacks the claim {exc.claim!r}") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (nbf/iat)") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is malformed") from None
        subject = claims.get("sub") or claims.get("client_id") or claims.get("azp")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token names no subject (sub)")
        return Identity(subject[:200], token_scopes(claims), "jwt"), float(claims["exp"])


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes of ``scope`` / ``scp`` that this service knows."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found & KNOWN_SCOPES)
