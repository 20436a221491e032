"""The configuration object's own rules (infra.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.config import ApiKeySpec, Settings, redact_url
from infra.secrets import SecretNotFound, SecretSource


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


def test_secrets_come_from_a_named_variable_or_file(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", " shpat_abc \n")
    assert SecretSource(env="SHOP_TOKEN").read().get_secret_value() == "shpat_abc"
    secret_file = Path(str(tmp_path)) / "token"
    secret_file.write_text("shpat_file\n")
    assert SecretSource(file=str(secret_file)).read().get_secret_value() == "shpat_file"
    assert "shpat" not in repr(SecretSource(file=str(secret_file)).read())
    monkeypatch.delenv("SHOP_TOKEN")
    with pytest.raises(SecretNotFound, match="environment variable SHOP_TOKEN"):
        SecretSource(env="SHOP_TOKEN").read()
    with pytest.raises(SecretNotFound, match="nope"):
        SecretSource(file=str(Path(str(tmp_path)) / "nope")).read()
    with pytest.raises(ValidationError, match="exactly one"):
        SecretSource(env="A", file="b")


def test_shopify_targets_are_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AVAILABILITY_SHOPIFY_TARGETS",
        '[{"name": "main", "shop_domain": "acme.myshopify.com", "access_token": {"env": "T"},'
        ' "locations": {"STORE-001": "gid://shopify/Location/1"}}]',
    )
    (target,) = Settings().shopify_targets
    assert target.graphql_url == "https://acme.myshopify.com/admin/api/2026-10/graphql.json"
    assert target.location_of("gid://shopify/Location/1") == "STORE-001"
    assert target.location_of("gid://shopify/Location/2") is None
    local = target.model_copy(update={"admin_url": "http://127.0.0.1:9000/"})
    assert local.graphql_url == "http://127.0.0.1:9000/admin/api/2026-10/graphql.json"
