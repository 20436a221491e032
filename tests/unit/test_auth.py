"""The identity layer: API keys, JWTs and the authenticator (services.auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.config import ApiKeySpec, Settings
from services.auth.api_keys import ApiKeyBook, ApiKeyConfigError, hash_api_key, new_api_key
from services.auth.authenticator import ANONYMOUS, AuthConfigError, Authenticator
from services.auth.identity import Identity, Unauthenticated
from services.auth.jwt_tokens import JwtVerifier, SigningKeys, parse_algorithms, token_scopes
from services.auth.scopes import AVAILABILITY_READ, KNOWN_SCOPES, OPS, RULES_WRITE
from tests.jwt_issuer import AUDIENCE, ISSUER, Issuer


def spec(key: str, *scopes: str, key_id: str = "k1") -> ApiKeySpec:
    return ApiKeySpec(id=key_id, sha256=hash_api_key(key), scopes=scopes)


# --- API keys ----------------------------------------------------------------------


def test_new_keys_are_long_random_and_recognisable() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("avk_") and len(key) == 47 for key in keys)


def test_a_key_is_found_by_its_hash_and_carries_its_scopes() -> None:
    key = new_api_key()
    book = ApiKeyBook([spec(key, AVAILABILITY_READ, key_id="storefront")])
    assert book.identify(key) == Identity("storefront", frozenset({AVAILABILITY_READ}), "api_key")
    assert book.identify(new_api_key()) is None
    assert book.identify(key + "x") is None


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([spec("avk_a", "availability:write")], "unknown scope(s) availability:write"),
        ([spec("avk_a", OPS), spec("avk_b", OPS)], "configured twice"),
        ([spec("avk_a", OPS), spec("avk_a", OPS, key_id="k2")], "hash of another key"),
    ],
)
def test_unusable_key_configurations_are_refused(specs: list[ApiKeySpec], message: str) -> None:
    with pytest.raises(ApiKeyConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ApiKeyBook(specs)


def test_the_key_file_is_read_and_bad_files_are_named(tmp_path: Path) -> None:
    key = new_api_key()
    good = tmp_path / "keys.json"
    good.write_bytes(orjson.dumps([spec(key, RULES_WRITE).model_dump()]))
    auth = Authenticator.from_settings(Settings(auth_api_keys_file=str(good)))
    assert auth.authenticate(f"Bearer {key}").scopes == {RULES_WRITE}
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "x", "sha256": "abc", "scopes": []}]')
    with pytest.raises(AuthConfigError, match=r"bad\.json.*entry 0\.sha256"):
        Authenticator.from_settings(Settings(auth_api_keys_file=str(bad)))
    with pytest.raises(AuthConfigError, match=r"missing\.json"):
        Authenticator.from_settings(Settings(auth_api_keys_file=str(tmp_path / "missing.json")))


# --- the authenticator ---------------------------------------------------------------


def test_bearer_header_forms() -> None:
    key = new_api_key()
    auth = Authenticator(ApiKeyBook([spec(key, OPS)]), None)
    assert auth.authenticate(f"Bearer {key}").subject == "k1"
    assert auth.authenticate(f"bearer   {key}").subject == "k1"
    refusals = {
        None: "no credential",
        "": "no credential",
        f"Basic {key}": "must be 'Bearer <token>'",
        "Bearer ": "empty",
        "Bearer avk_" + "x" * 9000: "exceeds 8192",
        f"Bearer {new_api_key()}": "unknown API key",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln": "no JWT issuer is configured",
    }
    for header, reason in refusals.items():
        with pytest.raises(Unauthenticated, match=reason):
            auth.authenticate(header)


def test_a_refusal_never_quotes_the_token() -> None:
    auth = Authenticator(ApiKeyBook([]), None)
    secret = new_api_key()
    with pytest.raises(Unauthenticated) as raised:
        auth.authenticate(f"Bearer {secret}")
    assert secret not in raised.value.reason


def test_no_credentials_configured_refuses_everyone_and_says_so() -> None:
    auth = Authenticator(ApiKeyBook([]), None)
    with pytest.raises(Unauthenticated, match="no credentials configured"):
        auth.authenticate(None)


def test_not_required_lets_anonymous_in_but_still_checks_what_is_sent() -> None:
    key = new_api_key()
    auth = Authenticator(ApiKeyBook([spec(key, AVAILABILITY_READ)]), None, required=False)
    assert auth.authenticate(None) == ANONYMOUS
    assert ANONYMOUS.scopes == KNOWN_SCOPES
    assert auth.authenticate(f"Bearer {key}").subject == "k1"
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {new_api_key()}")


def test_identity_scope_checks() -> None:
    reader = Identity("s", frozenset({AVAILABILITY_READ}), "api_key")
    assert reader.allows({AVAILABILITY_READ})
    assert reader.allows({RULES_WRITE, AVAILABILITY_READ})
    assert not reader.allows({RULES_WRITE})
    assert reader.allows(frozenset())


# --- JWTs ----------------------------------------------------------------------------


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


def verifier(issuer: Issuer, algorithms: str = "RS256,ES256") -> JwtVerifier:
    keys = SigningKeys(file=str(issuer.jwks))
    keys.load()
    return JwtVerifier(
        keys, issuer=ISSUER, audience=AUDIENCE, algorithms=parse_algorithms(algorithms), leeway=5
    )


def test_valid_tokens_give_their_subject_and_known_scopes(issuer: Issuer) -> None:
    check = verifier(issuer)
    identity = check.verify(issuer.token(scope="availability:read ops other:thing"))
    assert identity == Identity("oms", frozenset({AVAILABILITY_READ, OPS}), "jwt")
    ec_identity = check.verify(issuer.token(kid="ec-1", alg="ES256", scp=["rules:write"]))
    assert ec_identity.scopes == {RULES_WRITE}
    assert check.verify(issuer.token(sub=None, client_id="shop-app")).subject == "shop-app"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": -60}, "expired"),
        ({"aud": "another-api"}, "not issued for this service"),
        ({"iss": "https://evil.example.com/"}, "issuer is not accepted"),
        ({"exp": None}, "lacks the claim 'exp'"),
        ({"sub": None}, "names no subject"),
        ({"nbf": 600}, "not valid yet"),
    ],
)
def test_tokens_with_bad_claims_are_refused(
    issuer: Issuer, claims: dict[str, Any], reason: str
) -> None:
    # Times are relative to now, taken here: a suite may run long after collection.
    now = int(time.time())
    absolute = {
        k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in claims.items()
    }
    with pytest.raises(Unauthenticated, match=reason):
        verifier(issuer).verify(issuer.token(**absolute))


def test_forged_and_confused_tokens_are_refused(issuer: Issuer) -> None:
    check = verifier(issuer)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        check.verify(issuer.token(key=other))
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**31}, None, "none")
    with pytest.raises(Unauthenticated, match="algorithm 'none' is not accepted"):
        check.verify(unsigned)
    # The classic key confusion: HS256 with the public key as the shared secret.
    public_pem = issuer.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}
    confused = hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, body, public_pem)
    with pytest.raises(Unauthenticated, match="algorithm 'HS256' is not accepted"):
        check.verify(confused)
    # An allowed algorithm, but not the key's own.
    with pytest.raises(Unauthenticated, match="does not match its key"):
        check.verify(issuer.token(kid="rsa-1", alg="ES256"))
    with pytest.raises(Unauthenticated, match="neither an API key nor a JWT"):
        check.verify("not-a-token")


def hs256_by_hand(header: dict[str, Any], body: dict[str, Any], secret: bytes) -> str:
    """PyJWT refuses to sign with a public key as an HMAC secret; an attacker would not."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(orjson.dumps(header))}.{part(orjson.dumps(body))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def test_unknown_key_ids_are_refused_until_the_jwks_has_them(issuer: Issuer) -> None:
    check = verifier(issuer)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = issuer.token(kid="rsa-2", key=rotated)
    with pytest.raises(Unauthenticated, match="key this service does not know"):
        check.verify(token)
    issuer.publish(
        {**orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rotated.public_key())),
         "kid": "rsa-2", "alg": "RS256"}
    )  # fmt: skip
    check.keys.load()
    assert check.verify(token).subject == "oms"


def test_verified_tokens_are_remembered_until_they_expire(issuer: Issuer) -> None:
    check = verifier(issuer)
    token = issuer.token(exp=int(time.time()) + 2)
    assert check.verify(token).subject == "oms"
    issuer.jwks.write_text('{"keys": []}')
    check.keys.load()  # the key is gone, but the token was verified already
    assert check.verify(token).subject == "oms"
    check.leeway = 0
    time.sleep(2.1)
    with pytest.raises(Unauthenticated):
        check.verify(token)


def test_jwt_configuration_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="ISSUER and AVAILABILITY_AUTH_JWT_AUDIENCE"):
        Authenticator.from_settings(Settings(auth_jwt_jwks_file=str(tmp_path / "j.json")))
    with pytest.raises(AuthConfigError, match="HS256 not allowed"):
        Authenticator.from_settings(
            Settings(
                auth_jwt_jwks_file="j.json",
                auth_jwt_issuer=ISSUER,
                auth_jwt_audience=AUDIENCE,
                auth_jwt_algorithms="RS256,HS256",
            )
        )
    with pytest.raises(AuthConfigError, match="exactly one"):
        Authenticator.from_settings(
            Settings(
                auth_jwt_jwks_file="j.json",
                auth_jwt_jwks_url="https://x/jwks",
                auth_jwt_issuer=ISSUER,
                auth_jwt_audience=AUDIENCE,
            )
        )


def test_an_unreadable_jwks_keeps_the_old_keys(issuer: Issuer) -> None:
    check = verifier(issuer)
    issuer.jwks.write_text("not json")
    check.keys.load()
    assert check.keys.last_error is not None
    assert check.verify(issuer.token()).subject == "oms"


def test_token_scopes_reads_both_claims() -> None:
    assert token_scopes({"scope": "ops rules:write"}) == {OPS, RULES_WRITE}
    assert token_scopes({"scp": "ops"}) == {OPS}
    assert token_scopes({"scp": ["ops", 3, "nope"]}) == {OPS}
    assert token_scopes({}) == frozenset()
