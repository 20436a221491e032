"""The gRPC server's TLS settings (services.grpc.tls) and connection limits
(services.grpc.connections): what they make of the settings, and the errors that stop
a misconfigured server, naming the setting and never a file's content."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from infra.config import Settings
from services.grpc.connections import ServerLimitsError, maximum_concurrent_rpcs, server_options
from services.grpc.tls import (
    TlsConfigError,
    certificate_scopes,
    certificate_subject,
    server_credentials,
)
from tests.grpc_certificates import CertificateAuthority


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


def test_plaintext_by_default() -> None:
    assert server_credentials(Settings()) is None
    assert certificate_scopes(Settings()) is None


def test_tls_and_mutual_tls(authority: CertificateAuthority) -> None:
    server = authority.server()
    tls = Settings(grpc_tls_cert_file=str(server.cert_file), grpc_tls_key_file=str(server.key_file))
    assert isinstance(server_credentials(tls), grpc.ServerCredentials)
    assert certificate_scopes(tls) is None  # no client certificates: tokens only
    mutual = tls.model_copy(update={"grpc_tls_client_ca_file": str(authority.cert_file)})
    assert isinstance(server_credentials(mutual), grpc.ServerCredentials)
    assert certificate_scopes(mutual) == {"availability:read", "availability:watch"}
    narrowed = mutual.model_copy(update={"grpc_client_cert_scopes": " availability:read "})
    assert certificate_scopes(narrowed) == {"availability:read"}


def test_unusable_settings_say_which_and_why(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    server, other = authority.server(), authority.client("someone")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases: list[tuple[dict[str, str], str]] = [
        ({"grpc_tls_cert_file": str(server.cert_file)}, "set both"),
        ({"grpc_tls_key_file": str(server.key_file)}, "set both"),
        ({"grpc_tls_client_ca_file": str(authority.cert_file)}, "mutual TLS needs"),
        (
            {"grpc_tls_cert_file": str(tmp_path / "gone.crt"), "grpc_tls_key_file": "k"},
            "AVAILABILITY_GRPC_TLS_CERT_FILE '.*gone.crt': No such file",
        ),
        (
            {"grpc_tls_cert_file": str(not_pem), "grpc_tls_key_file": str(server.key_file)},
            "holds no PEM certificate",
        ),
        (
            {"grpc_tls_cert_file": str(server.cert_file), "grpc_tls_key_file": str(not_pem)},
            "holds no unencrypted PEM private key",
        ),
        (
            {"grpc_tls_cert_file": str(server.cert_file), "grpc_tls_key_file": str(other.key_file)},
            "is not the key of the first certificate",
        ),
        (
            {
                "grpc_tls_cert_file": str(server.cert_file),
                "grpc_tls_key_file": str(server.key_file),
                "grpc_tls_client_ca_file": str(not_pem),
            },
            "AVAILABILITY_GRPC_TLS_CLIENT_CA_FILE .* holds no PEM certificate",
        ),
    ]
    for fields, message in cases:
        with pytest.raises(TlsConfigError, match=message) as refused:
            server_credentials(Settings(**fields))
        assert "PRIVATE KEY" not in str(refused.value)
    with pytest.raises(TlsConfigError, match=r"unknown scope.*ops:everything"):
        certificate_scopes(
            Settings(
                grpc_tls_client_ca_file=str(authority.cert_file),
                grpc_client_cert_scopes="availability:read ops:everything",
            )
        )


def test_the_certificate_subject() -> None:
    context = {"x509_subject": [b"CN=terminal-0042,O=Store 17"], "x509_common_name": [b"x"]}
    assert certificate_subject(context) == "CN=terminal-0042,O=Store 17"
    assert certificate_subject({"x509_common_name": [b"terminal-7"]}) == "terminal-7"
    assert certificate_subject({}) == "unnamed client certificate"


def test_connection_options() -> None:
    options = dict(server_options(Settings(grpc_keepalive_time=1.5, grpc_keepalive_timeout=2)))
    assert options["grpc.keepalive_time_ms"] == 1500
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 2000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.max_receive_message_length"] == 1024 * 1024


def test_concurrent_calls_must_leave_room_beside_the_watches() -> None:
    assert maximum_concurrent_rpcs(Settings()) == 12_000
    with pytest.raises(ServerLimitsError, match=r"\(10000\) must exceed .*MAX_WATCHES \(10000\)"):
        maximum_concurrent_rpcs(Settings(grpc_max_concurrent_rpcs=10_000))
