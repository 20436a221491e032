"""``python -m services.http``: serve the HTTP API with uvicorn on ``AVAILABILITY_HTTP_PORT``.

It binds ``0.0.0.0`` (all interfaces): in Kubernetes the API must be reachable
from other pods and the kubelet's probes. On a workstation, firewall the port or
run it behind something that binds loopback.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

import uvicorn

from infra.config import get_settings
from infra.logs import configure_logging, logging_config
from services.http.app import create_app

HOST = "0.0.0.0"  # deliberate: see the module docstring


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # Everything allocated so far lives as long as the process: keep it out of
            # the collector's generations. Full collections were most of the p99.
            gc.collect()
            gc.freeze()


def serve(
    app: Any,
    port: int,
    log_level: str,
    host: str = HOST,
    log_config: dict[str, Any] | None = None,
) -> None:
    """Run ``app`` as the service runs (the benchmark's baseline uses it too)."""
    config = uvicorn.Config(
        app,
        log_config=log_config,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level.lower(),
        server_header=False,
    )
    _Server(config).run()


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    serve(
        create_app(settings),
        settings.http_port,
        settings.log_level,
        log_config=logging_config(settings),
    )


if __name__ == "__main__":
    main()
