"""``python -m services.http``: serve the HTTP API with uvicorn on ``AVAILABILITY_HTTP_PORT``.

It binds ``0.0.0.0`` (all interfaces): in Kubernetes the API must be reachable
from other pods and the kubelet's probes. On a workstation, firewall the port or
run it behind something that binds loopback.
"""

from __future__ import annotations

import gc
import logging
import socket

import uvicorn

from services.config import get_settings
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


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=HOST,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        server_header=False,
    )
    _Server(config).run()


if __name__ == "__main__":
    main()
