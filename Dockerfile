# One image for every process of the availability service (README "Deploying" >
# "Image"): the worker (the default command), the HTTP API, the gRPC API, the Shopify
# push and the operator CLI, each started by its own exec-form command.
#
#   docker build -t availability-service .
#   docker run availability-service                                   # the worker
#   docker run availability-service python -m services.http           # the HTTP API
#   docker run availability-service python -m services.grpc           # the gRPC API
#   docker run availability-service python -m services.push           # the Shopify push
#   docker run availability-service availability-ops topics create    # the operator CLI
#
# The install step is `pip install -c constraints.txt .`: the runtime dependencies at
# the versions the tests ran with, no dev extras, no development broker.
# tests/integration/test_image_install.py performs the same step in a fresh venv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment with the service and its pinned dependencies ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore admits only what the install needs (the packages, pyproject.toml,
# constraints.txt and README.md, which pyproject.toml names).
COPY . .
RUN python -m venv /opt/availability \
    && /opt/availability/bin/pip install --no-cache-dir --no-compile -c constraints.txt . \
    # Byte-code compiled now: the root filesystem may be read-only at run time.
    && /opt/availability/bin/python -m compileall -q /opt/availability/lib

# --- runtime: the environment alone, run by an unprivileged user ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="availability-service" \
      org.opencontainers.image.description="Real-time inventory availability service" \
      org.opencontainers.image.licenses="Apache-2.0"
# UID/GID 10001, as the Helm chart's securityContext expects; /data is the worker's
# data directory (AVAILABILITY_DATA_DIR), writable by that user (a volume in Kubernetes).
RUN groupadd --system --gid 10001 availability \
    && useradd --system --uid 10001 --gid availability --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin availability \
    && mkdir /data \
    && chown availability:availability /data
COPY --from=build /opt/availability /opt/availability
ENV PATH=/opt/availability/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AVAILABILITY_DATA_DIR=/data
WORKDIR /data
USER 10001:10001
# Ports the processes listen on by default: HTTP API, gRPC API, and the /metrics and
# probes of the worker, the gRPC API and the push.
EXPOSE 8080 50051 9180 9181 9182
CMD ["python", "-m", "streams"]
