"""TLS and mutual TLS of the gRPC server (README "gRPC API").

Plaintext unless ``AVAILABILITY_GRPC_TLS_CERT_FILE`` and ``AVAILABILITY_GRPC_TLS_KEY_FILE``
name the server's certificate chain and private key (PEM). With
``AVAILABILITY_GRPC_TLS_CLIENT_CA_FILE`` too, every client must present a certificate
that CA signed, or the handshake fails (mutual TLS). A call on such a connection that
sends no bearer token is the certificate's: its subject is the identity (kind
``client_certificate``), its scopes ``AVAILABILITY_GRPC_CLIENT_CERT_SCOPES``.

The files are read and checked once, at start. Errors name the setting and the file,
never what the file holds: a private key must not reach a log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from infra.config import Settings
from services.auth.scopes import KNOWN_SCOPES

CERT_SETTING = "AVAILABILITY_GRPC_TLS_CERT_FILE"
KEY_SETTING = "AVAILABILITY_GRPC_TLS_KEY_FILE"
CLIENT_CA_SETTING = "AVAILABILITY_GRPC_TLS_CLIENT_CA_FILE"
SCOPES_SETTING = "AVAILABILITY_GRPC_CLIENT_CERT_SCOPES"


class TlsConfigError(ValueError):
    """The TLS settings cannot be used; the message says which and why."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials, or None for plaintext."""
    cert_file, key_file = settings.grpc_tls_cert_file, settings.grpc_tls_key_file
    ca_file = settings.grpc_tls_client_ca_file
    if not cert_file and not key_file:
        if ca_file:
            raise TlsConfigError(
                f"{CLIENT_CA_SETTING} is set without {CERT_SETTING} and {KEY_SETTING}:"
                " mutual TLS needs the server's certificate and key too"
            )
        return None
    if not cert_file or not key_file:
        raise TlsConfigError(f"set both {CERT_SETTING} and {KEY_SETTING}, or neither")
    chain = _read(CERT_SETTING, cert_file)
    certificates = _certificates(CERT_SETTING, cert_file, chain)
    key_pem = _read(KEY_SETTING, key_file)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsConfigError(
            f"{KEY_SETTING} {key_file!r} holds no unencrypted PEM private key"
        ) from None
    if key.public_key() != certificates[0].public_key():
        raise TlsConfigError(
            f"the key in {KEY_SETTING} {key_file!r} is not the key of the first"
            f" certificate in {CERT_SETTING} {cert_file!r}"
        )
    client_ca = None
    if ca_file:
        client_ca = _read(CLIENT_CA_SETTING, ca_file)
        _certificates(CLIENT_CA_SETTING, ca_file, client_ca)
    return grpc.ssl_server_credentials(
        [(key_pem, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def certificate_scopes(settings: Settings) -> frozenset[str] | None:
    """The scopes of a call made with a client certificate alone; None without mutual TLS."""
    if not settings.grpc_tls_client_ca_file:
        return None
    scopes = frozenset(settings.grpc_client_cert_scopes.split())
    unknown = sorted(scopes - KNOWN_SCOPES)
    if unknown:
        raise TlsConfigError(
            f"{SCOPES_SETTING}: unknown scope(s) {', '.join(unknown)}"
            f" (known: {', '.join(sorted(KNOWN_SCOPES))})"
        )
    return scopes


def certificate_subject(auth_context: Mapping[str, Iterable[bytes]]) -> str:
    """The verified client certificate's subject (``CN=...,O=...``) from a call's
    ``context.auth_context()``; its common name where grpc gives no subject."""
    for name in ("x509_subject", "x509_common_name"):
        for value in auth_context.get(name, ()):
            return value.decode("utf-8", "replace")[:200]
    return "unnamed client certificate"


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{setting} {path!r}: {exc.strerror}") from None


def _certificates(setting: str, path: str, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsConfigError(f"{setting} {path!r} holds no PEM certificate")
    return certificates
