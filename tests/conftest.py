"""Settings of the test process itself, made before any test module is imported."""

from __future__ import annotations

import os

# grpcio >= 1.81 restarts its poller thread in a forked child when fork support is on
# (its default); the tests start service processes with subprocess (fork, then exec),
# and a child forked while gRPC calls are in flight then aborts before its exec
# ("epoll_wait error: Bad file descriptor", grpc/grpc#43055). The test process never
# uses gRPC in a forked child, so it needs no fork support. Read when grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
