"""Shopify's webhook signature: ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of
the raw body with the app's client secret. It is checked on the bytes as received,
before anything parses them, and compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac

from pydantic import SecretStr


def sign(body: bytes, secret: SecretStr) -> str:
    """The header value Shopify sends with ``body``."""
    digest = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(body: bytes, header: str | None, secret: SecretStr) -> bool:
    """Whether ``header`` is the signature of ``body``. Constant time in the header's
    content (``hmac.compare_digest``); a missing or non-ASCII header is refused."""
    if not header:
        return False
    try:
        given = header.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(sign(body, secret).encode("ascii"), given)
