"""``services.cli credentials`` and the operator check of commands that write."""

from __future__ import annotations

import io

import orjson
import pytest

from infra.config import ApiKeySpec, Settings
from services.auth.api_keys import hash_api_key, new_api_key
from services.auth.authenticator import Authenticator
from services.auth.scopes import AVAILABILITY_READ, OPS
from services.cli import __main__ as cli
from services.cli.operator import NotAuthorised, operator_identity


def test_new_key_prints_a_key_and_the_entry_that_admits_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["credentials", "new-key", "--id", "oms", "--scope", OPS]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[0].rsplit(" ", 1)[1]
    entry = orjson.loads(lines[-1])
    assert entry == {"id": "oms", "sha256": hash_api_key(key), "scopes": [OPS]}
    # The entry, configured, admits exactly that key with those scopes.
    auth = Authenticator.from_settings(Settings(auth_api_keys=[ApiKeySpec(**entry)]))
    identity = auth.authenticate(f"Bearer {key}")
    assert (identity.subject, identity.scopes) == ("oms", {OPS})


def test_new_key_refuses_unknown_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["credentials", "new-key", "--id", "x", "--scope", "root"])
    assert exited.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


def test_hash_key_reads_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_api_key()
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert cli.main(["credentials", "hash-key"]) == 0
    assert capsys.readouterr().out.strip() == hash_api_key(key)


def settings_with(token: str, *scopes: str) -> Settings:
    key = new_api_key()
    return Settings(
        auth_api_keys=[ApiKeySpec(id="op", sha256=hash_api_key(key), scopes=scopes)],
        token=key if token == "configured" else token,
    )


def test_operator_needs_a_verified_token_with_ops() -> None:
    assert operator_identity(settings_with("configured", OPS)).subject == "op"
    with pytest.raises(NotAuthorised, match="lacks the scope this needs: ops"):
        operator_identity(settings_with("configured", AVAILABILITY_READ))
    with pytest.raises(NotAuthorised, match="unknown API key"):
        operator_identity(settings_with(new_api_key(), OPS))
    with pytest.raises(NotAuthorised, match="set AVAILABILITY_TOKEN"):
        operator_identity(settings_with("", OPS))
    assert operator_identity(Settings(auth_required=False)).subject == "anonymous"


def test_commands_that_write_refuse_without_ops(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = settings_with("configured", AVAILABILITY_READ)
    monkeypatch.setattr(cli, "get_settings", lambda: reader)
    assert cli.main(["rebuild", "--no-wait"]) == 2
    assert "not authorised" in capsys.readouterr().err
    assert cli.main(["dead-letters", "replay", "--id", "0:1"]) == 2
    reset = ["baseline", "reset", "--sku", "S", "--location", "L", "--on-hand", "3"]
    assert cli.main(reset) == 2
    assert "lacks the scope this needs: ops" in capsys.readouterr().err


def test_whoami(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: settings_with("configured", OPS))
    assert cli.main(["credentials", "whoami"]) == 0
    assert capsys.readouterr().out.strip() == "subject op (api_key); scopes: ops"
    monkeypatch.setattr(cli, "get_settings", lambda: settings_with(new_api_key(), OPS))
    assert cli.main(["credentials", "whoami"]) == 1
    out = capsys.readouterr().out
    assert "not accepted here: unknown API key" in out
