"""The configuration object's own rules (infra.config)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.config import ApiKeySpec, Settings, redact_url


def test_redis_passwords_never_reach_messages() -> None:
    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("rediss://app:s3cret@redis.internal/1") == "rediss://app:***@redis.internal/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    shown = Settings(redis_url="redis://u:pw@h:1/0").redis_url_shown
    assert "pw" not in shown


def test_the_operator_token_is_not_shown_by_the_settings() -> None:
    settings = Settings(token="avk_secret-value")
    assert "avk_secret-value" not in repr(settings)
    assert "avk_secret-value" not in str(settings.model_dump())


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "a b", "sha256": "0" * 64, "scopes": []},
        {"id": "a", "sha256": "0" * 63, "scopes": []},
        {"id": "a", "sha256": "0" * 64, "scopes": [], "key": "avk_x"},
    ],
)
def test_api_key_entries_are_validated(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ApiKeySpec.model_validate(entry)
