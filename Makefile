# Front door of the availability service.
#   make run              worker + HTTP API (+ a development broker and Redis if none answer)
#   make run SAMPLE=1     same, then publish a small sample catalogue (same as: make run-sample)
#   make run RUN_ARGS=... extra arguments for `python -m dev.stack run`
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

RUN_ARGS ?=
BENCH_ARGS ?=
LOAD_ARGS ?=
STANDIN_ARGS ?=
ifneq ($(filter 1 yes true,$(SAMPLE)),)
RUN_ARGS += --sample-data
endif

# Debian packages some targets need (wrk, h2load, promtool): apt-get as root, else sudo.
APT := $(if $(filter 0,$(shell id -u)),apt-get,sudo apt-get)
APT_INSTALL := $(APT) install -y -q --no-install-recommends

.DEFAULT_GOAL := help
# gRPC code generation (make protos; CI runs make protos-check). The .proto files live
# in proto/ (package availability.v1, imported as "availability/v1/...proto"). Generated
# with -I proto, the modules would be the top-level package `availability.v1`, which
# clashes with our domain package `availability`. So they are generated into the
# committed package services/grpc/gen/ (giving services/grpc/gen/availability/v1/),
# and the generated absolute imports of our own protos ("from availability.v1 import
# ...", in *_pb2_grpc.py and in any proto importing another) are rewritten to the
# fully qualified "from services.grpc.gen.availability.v1 import ...". The
# __init__.py files there are hand-written and not part of the generated set.
PROTO_DIR := proto
PROTO_FILES := $(sort $(shell find $(PROTO_DIR) -name '*.proto'))
GEN_DIR := services/grpc/gen
GEN_PACKAGE := services.grpc.gen
# $(call gen_protos,OUTPUT_DIR)
define gen_protos
	$(VPY) -m grpc_tools.protoc -I $(PROTO_DIR) --python_out=$(1) --pyi_out=$(1) \
		--grpc_python_out=$(1) $(PROTO_FILES)
	find $(1) \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) \
		-exec sed -i -E 's/^(from|import) availability\./\1 $(GEN_PACKAGE).availability./' {} +
endef

.PHONY: help venv run run-sample test unit lint fmt clean protos protos-check bench load bench-grpc \
	bench-reserve bench-cluster bench-locations bench-sizing \
	alerts-check chart-check image-check constraints shopify-schema shopify-standin

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP) ## create/refresh .venv from constraints.txt

run: $(STAMP) ## run broker/Redis (if needed), worker and HTTP API; SAMPLE=1 adds sample data
	$(VPY) -m dev.stack run $(RUN_ARGS)

run-sample: $(STAMP) ## make run with sample data
	$(VPY) -m dev.stack run --sample-data $(filter-out --sample-data,$(RUN_ARGS))

test: $(STAMP) ## all tests (integration tests start their own broker/Redis)
	$(VPY) -m pytest -q tests

unit: $(STAMP) ## unit tests only
	$(VPY) -m pytest -q tests/unit

lint: $(STAMP) ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP) ## benchmarks: HTTP and gRPC reads, reserve, fold vs its floor, freshness, memory; BENCH_ARGS=--quick
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
		echo "installing wrk and h2load (Debian packages wrk, nghttp2-client) for the read benchmark"; \
		$(APT_INSTALL) wrk nghttp2-client >/dev/null 2>&1 || \
		{ $(APT) update -q >/dev/null 2>&1 && $(APT_INSTALL) wrk nghttp2-client; }; }
	$(VPY) -m loadtests.bench $(BENCH_ARGS)

bench-reserve: $(STAMP) ## the reserve endpoint alone: highest throughput, then p50/p99 at half of it; BENCH_ARGS=--quick
	@command -v wrk >/dev/null || { \
		echo "installing wrk (Debian package wrk) for the closed-loop runs"; \
		$(APT_INSTALL) wrk >/dev/null 2>&1 || { $(APT) update -q >/dev/null 2>&1 && $(APT_INSTALL) wrk; }; }
	$(VPY) -m loadtests.bench_reserve $(BENCH_ARGS)

load: $(STAMP) ## headless flash-sale load test with Locust, Shopify channel included (oversell by channel and push policy); LOAD_ARGS=--quick
	$(VPY) -m loadtests.load $(LOAD_ARGS)

bench-grpc: $(STAMP) ## benchmark the gRPC API (watch delivery, Get latency); BENCH_ARGS=--quick
	$(VPY) -m loadtests.bench_grpc $(BENCH_ARGS)

bench-cluster: $(STAMP) ## reads and fold writes: a 3-master Redis Cluster beside a single Redis; BENCH_ARGS=--quick
	$(VPY) -m loadtests.bench_cluster $(BENCH_ARGS)

bench-locations: $(STAMP) ## one sold unit at 20, 200 and 1,000 locations: worker CPU, Redis and feed bytes per event; BENCH_ARGS=--quick
	$(VPY) -m loadtests.bench_locations $(BENCH_ARGS)

bench-sizing: $(STAMP) ## README "Sizing": worker state, Redis and reads per SKU-location at 20, 200, 500 locations per SKU; BENCH_ARGS=--quick
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
		echo "installing wrk and h2load (Debian packages wrk, nghttp2-client) for the read runs"; \
		$(APT_INSTALL) wrk nghttp2-client >/dev/null 2>&1 || \
		{ $(APT) update -q >/dev/null 2>&1 && $(APT_INSTALL) wrk nghttp2-client; }; }
	$(VPY) -m loadtests.bench_sizing $(BENCH_ARGS)

alerts-check: ## check the Prometheus alert rules and run their unit tests (promtool)
	@command -v promtool >/dev/null || { \
		echo "installing promtool (Debian package prometheus)"; \
		$(APT_INSTALL) prometheus >/dev/null 2>&1 || \
		{ $(APT) update -q >/dev/null 2>&1 && $(APT_INSTALL) prometheus; }; }
	promtool check rules ops/prometheus/alerts.yml
	cd ops/prometheus && promtool test rules alerts.test.yml

chart-check: $(STAMP) ## helm lint --strict, helm template (default and helm/availability/ci/*) validated for Kubernetes 1.33
	$(VPY) -m dev.chart_check

image-check: $(STAMP) ## hadolint the Dockerfile (the image's install step is tested by make test)
	$(VENV)/bin/hadolint Dockerfile

constraints: ## re-resolve pyproject.toml (runtime and dev) into constraints.txt in a fresh venv; review the diff
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv" \
	&& "$$tmp/venv/bin/python" -m pip install -q '.[dev]' \
	&& "$$tmp/venv/bin/python" -m pip freeze --all --exclude pip --exclude availability-service \
		> constraints.txt \
	&& echo "constraints.txt rewritten: git diff constraints.txt, then make venv and the tests"

shopify-schema: $(STAMP) ## fetch the Shopify Admin API 2026-10 schema (npm) into .data/shopify/
	$(VPY) -m dev.shopify_admin.schema_cache

shopify-standin: shopify-schema ## run the Shopify Admin API stand-in; STANDIN_ARGS=--help
	$(VPY) -m dev.shopify_admin $(STANDIN_ARGS)

protos: $(STAMP) ## regenerate the gRPC code in services/grpc/gen from proto/
	$(call gen_protos,$(GEN_DIR))

protos-check: $(STAMP) ## fail if the committed gRPC code differs from what proto/ generates
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory _protos-into OUT="$$tmp" >/dev/null || exit 1; \
	if ! diff -r -x '__init__.py' -x '__pycache__' -x '*.pyc' "$$tmp" $(GEN_DIR); then \
		echo "protos-check: $(GEN_DIR) is out of date with $(PROTO_DIR)/:" \
			"run 'make protos' and commit the result" >&2; \
		exit 1; \
	fi; \
	echo "protos-check: generated gRPC code is up to date"

_protos-into: # internal: generate into $(OUT)
	$(call gen_protos,$(OUT))

fmt: $(STAMP) ## ruff format + ruff check --fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## remove venv, .data and caches
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
