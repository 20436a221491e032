# Front door of the availability service.
#   make run              worker + HTTP API (+ a development broker and Redis if none answer)
#   make run SAMPLE=1     same, then publish a small sample catalogue (same as: make run-sample)
#   make run RUN_ARGS=... extra arguments for `python -m dev.stack run`
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

RUN_ARGS ?=
ifneq ($(filter 1 yes true,$(SAMPLE)),)
RUN_ARGS += --sample-data
endif

.DEFAULT_GOAL := help
.PHONY: help venv run run-sample test unit lint fmt clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

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

fmt: $(STAMP) ## ruff format + ruff check --fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## remove venv, .data and caches
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
