"""TLS and mutual TLS of a live gRPC server, with certificates made by the test: TLS
alone still needs a bearer token; with a client CA, a client without a certificate
(or with one another CA signed) fails the handshake, and a certificate alone is a
credential whose subject the watch quota counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest

from infra.config import Settings
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from tests.grpc_certificates import CertificateAuthority, Issued
from tests.integration.conftest import StartService
from tests.integration.grpc_support import (
    AUTH,
    SKU,
    auth_metadata,
    availability_of,
    forget_store,
    stock_events,
    wait_serving,
    watch,
)
from tests.integration.support import ProcessHandle, mark_serving_layer_complete

TERMINAL = "CN=terminal-0042,O=Store 17"
GET = pb.GetAvailabilityRequest(sku=SKU)


class Authorities:
    def __init__(self, directory: Path) -> None:
        self.server_ca = CertificateAuthority(directory, "server CA")
        self.client_ca = CertificateAuthority(directory, "terminal CA")
        self.rogue_ca = CertificateAuthority(directory, "rogue CA")
        self.server = self.server_ca.server("localhost")

    def settings(self, base: Settings, *, mutual: bool, **fields: object) -> Settings:
        """``base`` serving with the server certificate (and the client CA if ``mutual``)."""
        update: dict[str, object] = {
            "grpc_tls_cert_file": str(self.server.cert_file),
            "grpc_tls_key_file": str(self.server.key_file),
            **fields,
        }
        if mutual:
            update["grpc_tls_client_ca_file"] = str(self.client_ca.cert_file)
        return base.model_copy(update=update)

    def channel(self, port: int, client: Issued | None = None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.server_ca.cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )
        return grpc.aio.secure_channel(f"localhost:{port}", credentials)


@pytest.fixture
def authorities(tmp_path: Path) -> Authorities:
    return Authorities(tmp_path)


@pytest.fixture
async def seeded(settings: Settings) -> AsyncIterator[AvailabilityStore]:
    """A record of SKU under the prefix every Settings of this test shares."""
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    await store.write_records([availability_of(SKU, stock_events())])
    await mark_serving_layer_complete(store, settings.partitions)
    yield store
    await forget_store(store)


async def status(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def start(
    start_service: StartService, settings: Settings, authorities: Authorities, client: Issued
) -> ProcessHandle:
    process = start_service("services.grpc", settings)
    async with authorities.channel(settings.grpc_port, client) as channel:
        await wait_serving(channel, process)
    assert "(mutual TLS)" in process.log_text() or "(TLS)" in process.log_text()
    return process


async def test_tls_alone_still_needs_a_token(
    settings: Settings,
    seeded: AvailabilityStore,
    authorities: Authorities,
    start_service: StartService,
) -> None:
    tls = authorities.settings(settings, mutual=False)
    process = start_service("services.grpc", tls)
    async with authorities.channel(tls.grpc_port) as channel:
        await wait_serving(channel, process)
        assert "(TLS)" in process.log_text()
        stub = pb_grpc.AvailabilityServiceStub(channel)
        assert (await stub.GetAvailability(GET, metadata=AUTH, timeout=5)).sku == SKU
        assert await status(stub.GetAvailability(GET, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    # A plaintext client gets no answer at all.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls.grpc_port}") as plain:
        stub = pb_grpc.AvailabilityServiceStub(plain)
        assert await status(stub.GetAvailability(GET, metadata=AUTH, timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE
        )


async def test_mutual_tls_the_certificate_is_the_credential(
    settings: Settings,
    seeded: AvailabilityStore,
    authorities: Authorities,
    start_service: StartService,
) -> None:
    mutual = authorities.settings(settings, mutual=True, grpc_max_watches_per_identity=1)
    terminal = authorities.client_ca.client("terminal-0042", "Store 17")
    await start(start_service, mutual, authorities, terminal)
    port = mutual.grpc_port

    # No certificate, or one another CA signed: the handshake fails, token or not.
    for client in (None, authorities.rogue_ca.client("terminal-0042", "Store 17")):
        async with authorities.channel(port, client) as channel:
            stub = pb_grpc.AvailabilityServiceStub(channel)
            assert await status(stub.GetAvailability(GET, metadata=AUTH, timeout=5)) == (
                grpc.StatusCode.UNAVAILABLE
            )

    async with (
        authorities.channel(port, terminal) as first,
        authorities.channel(port, terminal) as second,
        authorities.channel(port, authorities.client_ca.client("terminal-0043")) as neighbour,
    ):
        stub = pb_grpc.AvailabilityServiceStub(first)
        assert (await stub.GetAvailability(GET, timeout=5)).sku == SKU  # no token needed
        held = watch(stub, [SKU], metadata=None)
        await held.read_initial(1)
        # The quota is the certificate's, whichever connection it comes on.
        again = watch(pb_grpc.AvailabilityServiceStub(second), [SKU], metadata=None)
        code, message = await again.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"the credential of {TERMINAL!r} holds its quota of 1" in message
        # Another certificate has its own; a token, when sent, is the credential.
        other = watch(pb_grpc.AvailabilityServiceStub(neighbour), [SKU], metadata=None)
        await other.read_initial(1)
        with_token = watch(pb_grpc.AvailabilityServiceStub(second), [SKU])
        await with_token.read_initial(1)
        # A bad token is refused, not replaced by the certificate.
        bad = auth_metadata("avk_" + "x" * 43)
        assert await status(stub.GetAvailability(GET, metadata=bad, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        for call in (held, other, with_token):
            await call.close()


async def test_certificate_scopes_come_from_the_settings(
    settings: Settings,
    seeded: AvailabilityStore,
    authorities: Authorities,
    start_service: StartService,
) -> None:
    reader_only = authorities.settings(
        settings,
        mutual=True,
        grpc_client_cert_scopes="availability:read",
    )
    terminal = authorities.client_ca.client("kiosk-1")
    await start(start_service, reader_only, authorities, terminal)
    async with authorities.channel(reader_only.grpc_port, terminal) as channel:
        stub = pb_grpc.AvailabilityServiceStub(channel)
        assert (await stub.GetAvailability(GET, timeout=5)).sku == SKU
        code, message = await watch(stub, [SKU], metadata=None).status()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert message.endswith("lacks the scope this needs: availability:watch")


async def test_unusable_tls_settings_stop_the_server(
    settings: Settings, authorities: Authorities, start_service: StartService
) -> None:
    broken = settings.model_copy(update={"grpc_tls_cert_file": str(authorities.server.cert_file)})
    process = start_service("services.grpc", broken)
    assert await asyncio.to_thread(process.wait, 30) == 2
    assert "set both AVAILABILITY_GRPC_TLS_CERT_FILE and AVAILABILITY_GRPC_TLS_KEY_FILE" in (
        process.log_text()
    )
