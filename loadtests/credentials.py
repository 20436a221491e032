"""The benchmarks' credential: a fresh API key per run with every scope, configured
in the services by its hash (``bench_settings``) and sent by the load generators."""

from __future__ import annotations

from infra.config import ApiKeySpec
from services.auth.api_keys import hash_api_key, new_api_key
from services.auth.scopes import ALL_SCOPES


def bench_credential() -> tuple[str, ApiKeySpec]:
    key = new_api_key()
    return key, ApiKeySpec(id="bench", sha256=hash_api_key(key), scopes=ALL_SCOPES)


def bearer(key: str) -> str:
    """The ``Authorization`` header's value."""
    return f"Bearer {key}"


def grpc_metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", bearer(key)),)
