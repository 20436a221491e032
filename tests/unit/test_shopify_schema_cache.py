"""Fetching and caching the Admin API schema (dev.shopify_admin.schema_cache)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dev.shopify_admin import schema_cache
from dev.shopify_admin.schema_cache import SchemaUnavailable, ensure_schema, schema_path


def test_a_cached_schema_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = schema_path(tmp_path)
    shutil.copy(ensure_schema(), cached)
    monkeypatch.setattr(shutil, "which", lambda name: pytest.fail("npm must not run"))
    assert ensure_schema(tmp_path) == cached


def test_without_npm_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SchemaUnavailable, match=r"npm is not installed.*make shopify-schema"):
        ensure_schema(tmp_path)
    assert not schema_path(tmp_path).exists()


def test_a_different_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_cache, "SHA256", "0" * 64)
    monkeypatch.setattr(schema_cache, "_npm_pack", _fake_pack)
    with pytest.raises(SchemaUnavailable, match="expected 0000"):
        schema_cache.fetch_schema(tmp_path)
    assert not schema_path(tmp_path).exists()


def _fake_pack(workdir: Path) -> Path:
    """A tarball like npm's, holding the cached schema."""
    import tarfile

    tarball = workdir / "shopify-dev-mcp-1.16.0.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(ensure_schema(), arcname=schema_cache.MEMBER)
    return tarball


def test_extraction_from_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_cache, "_npm_pack", _fake_pack)
    fetched = schema_cache.fetch_schema(tmp_path)
    assert fetched == schema_path(tmp_path)
    assert fetched.read_bytes() == ensure_schema().read_bytes()
