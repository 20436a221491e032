"""The development credential of ``make run``: one API key with every scope, made
once and kept in ``.data/dev/api-key`` (readable by its owner only, ignored by git),
so that a token exported in a shell keeps working across runs. Development only: a
deployment configures its own keys or JWT issuer (README "Security")."""

from __future__ import annotations

import os
from pathlib import Path

from infra.config import ApiKeySpec, Settings
from services.auth.api_keys import KEY_PREFIX, hash_api_key, new_api_key
from services.auth.scopes import ALL_SCOPES

KEY_FILE = "api-key"
DEVELOPER = "developer"


def developer_key(state_dir: Path) -> tuple[str, Path]:
    """The development key (made if missing) and the file that holds it."""
    path = state_dir / KEY_FILE
    try:
        key = path.read_text().strip()
        if key.startswith(KEY_PREFIX):
            return key, path
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    key = new_api_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key, path


def with_developer_key(settings: Settings, key: str) -> list[ApiKeySpec]:
    """The configured API keys plus the development key (every scope)."""
    others = [spec for spec in settings.auth_api_keys if spec.id != DEVELOPER]
    return [*others, ApiKeySpec(id=DEVELOPER, sha256=hash_api_key(key), scopes=ALL_SCOPES)]
