"""``python -m services.grpc``: serve the gRPC API on ``AVAILABILITY_GRPC_PORT``."""

from __future__ import annotations

from services.grpc.server import main

if __name__ == "__main__":
    main()
