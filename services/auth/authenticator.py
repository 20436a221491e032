"""``Authenticator``: an ``Authorization`` header in, an ``Identity`` out (or
``Unauthenticated`` with a reason that is safe to send back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import orjson
from pydantic import TypeAdapter, ValidationError

from infra.config import ApiKeySpec, Settings
from services.auth.api_keys import ApiKeyBook, ApiKeyConfigError, looks_like_api_key
from services.auth.identity import Identity, Unauthenticated
from services.auth.jwt_tokens import JwtConfigError, JwtVerifier, SigningKeys, parse_algorithms
from services.auth.scopes import KNOWN_SCOPES

log = logging.getLogger(__name__)

#: Longest bearer token looked at (a JWT with many claims is a few KB).
MAX_TOKEN_LENGTH = 8192
#: Everyone, when AVAILABILITY_AUTH_REQUIRED=false and no credential is sent.
ANONYMOUS = Identity("anonymous", KNOWN_SCOPES, "anonymous")
BEARER = "bearer "


class AuthConfigError(ValueError):
    """The access-control settings cannot be used; the message says which and why."""


class Authenticator:
    def __init__(
        self, api_keys: ApiKeyBook, jwt_verifier: JwtVerifier | None, *, required: bool = True
    ) -> None:
        self.api_keys = api_keys
        self.jwt = jwt_verifier
        self.required = required
        self._refresh: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        try:
            specs = list(settings.auth_api_keys)
            if settings.auth_api_keys_file:
                specs.extend(read_api_key_file(settings.auth_api_keys_file))
            api_keys = ApiKeyBook(specs)
            verifier = None
            if settings.auth_jwt_jwks_url or settings.auth_jwt_jwks_file:
                keys = SigningKeys(
                    url=settings.auth_jwt_jwks_url,
                    file=settings.auth_jwt_jwks_file,
                    refresh_interval=settings.auth_jwks_refresh_interval,
                )
                verifier = JwtVerifier(
                    keys,
                    issuer=settings.auth_jwt_issuer,
                    audience=settings.auth_jwt_audience,
                    algorithms=parse_algorithms(settings.auth_jwt_algorithms),
                    leeway=settings.auth_jwt_leeway,
                )
        except (ApiKeyConfigError, JwtConfigError) as exc:
            raise AuthConfigError(str(exc)) from None
        authenticator = cls(api_keys, verifier, required=settings.auth_required)
        authenticator.log_mode()
        return authenticator

    @property
    def configured(self) -> bool:
        return len(self.api_keys) > 0 or self.jwt is not None

    def log_mode(self) -> None:
        if not self.required:
            log.warning(
                "AVAILABILITY_AUTH_REQUIRED=false: callers without a credential get every"
                " scope; run like this only behind a gateway that authenticates"
            )
        elif not self.configured:
            log.error(
                "no credentials are configured (AVAILABILITY_AUTH_API_KEYS[_FILE],"
                " AVAILABILITY_AUTH_JWT_*): every call except the open probes is refused"
            )
        else:
            log.info(
                "access control: %d API key(s)%s",
                len(self.api_keys),
                "" if self.jwt is None else f", JWTs signed by keys from {self.jwt.keys.source}",
            )

    async def start(self) -> None:
        """Load the JWT signing keys (briefly waited for) and keep them fresh."""
        if self.jwt is None or self._refresh is not None:
            return
        keys = self.jwt.keys
        self._refresh = asyncio.create_task(keys.run(), name="jwks-refresh")
        for _ in range(30):  # up to 3 s; tokens get 401 "not loaded yet" until then
            if keys.loaded_at is not None or keys.last_error is not None:
                break
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None

    def authenticate(self, authorization: str | None) -> Identity:
        """The identity an ``Authorization`` header value proves."""
        if not authorization:
            if not self.required:
                return ANONYMOUS
            if not self.configured:
                raise Unauthenticated(
                    "this server has no credentials configured, so it refuses every call"
                    " (README, Security)"
                )
            raise Unauthenticated("no credential: send 'Authorization: Bearer <token>'")
        if authorization[: len(BEARER)].lower() != BEARER:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return self.authenticate_token(authorization[len(BEARER) :].strip())

    def authenticate_token(self, token: str) -> Identity:
        if not token:
            raise Unauthenticated("the bearer token is empty")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(f"the bearer token exceeds {MAX_TOKEN_LENGTH} characters")
        if looks_like_api_key(token):
            identity = self.api_keys.identify(token)
            if identity is None:
                raise Unauthenticated("unknown API key")
            return identity
        if self.jwt is None:
            raise Unauthenticated("unknown API key (and no JWT issuer is configured)")
        return self.jwt.verify(token)


def read_api_key_file(path: str) -> list[ApiKeySpec]:
    """The JSON list of ``{"id", "sha256", "scopes"}`` in ``path`` (a mounted Secret)."""
    where = f"AVAILABILITY_AUTH_API_KEYS_FILE {path!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ApiKeyConfigError(f"{where}: {exc.strerror}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiKeyConfigError(f"{where} is not JSON: {exc}") from None
    try:
        return TypeAdapter(list[ApiKeySpec]).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ApiKeyConfigError(
            f'{where} must be a JSON list of {{"id", "sha256", "scopes"}}:'
            f" entry {field}: {first['msg']}"
        ) from None
