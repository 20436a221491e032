"""Property-based tests of the live HTTP API against its own OpenAPI document
(schemathesis): every operation, bounded examples, with a credential holding every
scope; no server error, and every answer matches the document (status code,
content type, body schema)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infra.config import Settings
from tests.integration.conftest import StartService
from tests.integration.support import REPO_ROOT, TEST_API_KEY, wait_http_ready

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
#: Per operation and phase: enough to reach every branch of the validators, small
#: enough for CI (the whole run takes about a minute here).
MAX_EXAMPLES = 40


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    # A worker too: without one /readyz and reads of unknown SKUs are (rightly) 503.
    start_service("streams", settings)
    api = start_service("services.http", settings)
    await wait_http_ready(settings.http_port, timeout=90, process=api)
    report = tmp_path / "schemathesis"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"http://127.0.0.1:{settings.http_port}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--header",
        f"Authorization: Bearer {TEST_API_KEY}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "17",
        # One worker: schemathesis parses source (ast) while it generates, and on
        # CPython 3.11 two threads doing that at once can raise "SystemError: AST
        # constructor recursion depth mismatch" inside the tool, failing the run
        # with nothing wrong in the API.
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--output-sanitize",
        "true",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    assert "No issues found" in output or " passed" in output, output[-3000:]
    assert api.running, api.tail()
