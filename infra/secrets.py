"""Secrets named in the configuration: where to read them, not their values.

A secret comes from an environment variable or a file (a mounted Kubernetes Secret);
it is read when a process needs it, as a ``SecretStr`` that prints as ``**********``,
and is never logged, served or written back anywhere."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator


class SecretNotFound(ValueError):
    """The secret's variable or file is missing or empty; the message names which."""


class SecretSource(BaseModel):
    """``{"env": "SHOPIFY_TOKEN_MAIN"}`` or ``{"file": "/secrets/shopify/main/token"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError('a secret names exactly one of "env" and "file"')
        return self

    @property
    def where(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def read(self) -> SecretStr:
        if self.env is not None:
            # The one place outside Settings that reads the environment: the variable's
            # name is itself configuration, so pydantic-settings cannot declare it.
            value = os.environ.get(self.env, "")
        else:
            assert self.file is not None
            try:
                value = Path(self.file).read_text()
            except OSError as exc:
                raise SecretNotFound(f"{self.where}: {exc.strerror}") from None
        value = value.strip()
        if not value:
            raise SecretNotFound(f"{self.where} is missing or empty")
        return SecretStr(value)
