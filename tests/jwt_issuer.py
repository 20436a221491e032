"""An OAuth2 authorisation server's signing side, for tests: RSA and EC keys, published
as a JWKS file, and tokens signed with them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://auth.example.com/"
AUDIENCE = "availability-api"


class Issuer:
    """An authorisation server's signing keys, published as a JWKS file."""

    def __init__(self, tmp_path: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.jwks = tmp_path / "jwks.json"
        self.publish()

    def publish(self, *extra: dict[str, Any]) -> None:
        keys = [
            {**orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key())),
             "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key())),
             "kid": "ec-1", "alg": "ES256", "use": "sig"},
            *extra,
        ]  # fmt: skip
        self.jwks.write_bytes(orjson.dumps({"keys": keys}))

    def token(
        self, *, kid: str = "rsa-1", alg: str = "RS256", key: Any = None, **claims: Any
    ) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "oms", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        signing = key if key is not None else (self.rsa if alg.startswith("RS") else self.ec)
        return jwt.encode(body, signing, algorithm=alg, headers={"kid": kid})
