"""The Helm chart (helm/availability) kept in step with the code, without helm itself
(``make chart-check`` renders and validates it).

- Every ``Settings`` field (read from ``infra.config`` when the test runs) is set by the
  chart itself, settable through ``config`` (values.schema.json lists the names), or
  listed in ``NOT_IN_CHART`` with the reason: a field added to ``Settings`` fails
  here until the chart knows it.
- Every ``AVAILABILITY_*`` name the chart sets is a ``Settings`` field (or, for now,
  in ``NOT_IN_SETTINGS_YET``).
- Every value in values.yaml is documented with ``## @param``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from infra.config import Settings

CHART = Path(__file__).resolve().parents[2] / "helm" / "availability"
PREFIX = "AVAILABILITY_"

#: Settings the chart does not offer, and why.
NOT_IN_CHART: dict[str, str] = {
    # The chart mounts the API keys as a file (auth.apiKeys -> AVAILABILITY_AUTH_API_KEYS_FILE);
    # the inline JSON form would be a second way to say the same.
    "auth_api_keys": "the keys come as a file (auth_api_keys_file)",
    # The drift CronJob's schedule replaces the long-running `drift-job` loop.
    "drift_interval": "the CronJob's schedule (drift.schedule) runs the check",
    # The SASL password is mounted from a Secret as a file (AVAILABILITY_KAFKA_SASL_PASSWORD_FILE),
    # never put in the environment.
    "kafka_sasl_password": "mounted as a file (kafka_sasl_password_file)",
}

#: Names the chart sets for settings that are being added to ``Settings`` (Redis
#: Cluster mode). Empty this list once they exist:
#: the test then holds the chart to them like to every other field.
NOT_IN_SETTINGS_YET: frozenset[str] = frozenset()

#: JSON Schema types of the values.schema.json ``config`` entries, by the Python type a
#: field's own JSON Schema names.
JSON_TYPES = {"integer", "number", "boolean", "string", "array", "object"}


def settings_fields() -> set[str]:
    return set(Settings.model_fields)


def chart_set_names() -> set[str]:
    """Settings the chart's templates set by name (comments left out)."""
    names: set[str] = set()
    for path in (CHART / "templates").rglob("*"):
        if not path.is_file():
            continue
        text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", path.read_text(), flags=re.DOTALL)
        text = re.sub(r"(^|\s)#.*$", "", text, flags=re.MULTILINE)
        names |= {m.lower() for m in re.findall(rf"{PREFIX}([A-Z0-9_]+)", text)}
    return names


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def config_names() -> set[str]:
    return set(schema()["properties"]["config"]["properties"])


def test_every_settings_field_is_in_the_chart_or_excluded_with_a_reason() -> None:
    offered = chart_set_names() | config_names() | set(NOT_IN_CHART)
    missing = settings_fields() - offered
    assert not missing, (
        f"Settings fields the Helm chart does not know: {sorted(missing)}. Set them in"
        " templates/_helpers.tpl (availability.settings), allow them under `config` in"
        " values.schema.json, or add them to NOT_IN_CHART with the reason."
    )


def test_the_chart_names_only_settings_that_exist() -> None:
    unknown = (chart_set_names() | config_names() | set(NOT_IN_CHART)) - settings_fields()
    assert unknown <= NOT_IN_SETTINGS_YET, sorted(unknown - NOT_IN_SETTINGS_YET)
    # Once a pending name is a real field, it leaves the pending list.
    arrived = NOT_IN_SETTINGS_YET & settings_fields()
    assert not arrived, f"now in Settings, remove from NOT_IN_SETTINGS_YET: {sorted(arrived)}"


def test_config_takes_only_what_the_chart_does_not_set_itself() -> None:
    both = config_names() & (chart_set_names() | set(NOT_IN_CHART))
    assert not both, sorted(both)


def test_config_entries_have_the_fields_types() -> None:
    fields = Settings.model_json_schema()["properties"]
    for name, entry in schema()["properties"]["config"]["properties"].items():
        field = fields[name]
        assert entry["type"] in JSON_TYPES, name
        if "enum" in field:
            assert entry.get("enum") == field["enum"], name
        else:
            assert entry["type"] == field["type"], name
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            assert entry.get(bound) == field.get(bound), (name, bound)


def _value_paths(values: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}{key}"
            paths.add(path)
            paths |= _value_paths(value, f"{path}.")
    return paths


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+)", text, flags=re.MULTILINE))
    paths = _value_paths(yaml.safe_load(text))
    # A value is documented by its own @param or by one of a whole map it is part of.
    undocumented = {
        path
        for path in paths
        if not any(path == d or path.startswith(f"{d}.") for d in documented)
        and not any(d.startswith(f"{path}.") for d in documented)
    }
    assert not undocumented, sorted(undocumented)
    assert documented <= paths, sorted(documented - paths)
    top = schema()["properties"]
    assert set(yaml.safe_load(text)) <= set(top), sorted(set(yaml.safe_load(text)) - set(top))


def test_the_alert_rules_and_dashboard_are_the_files_in_ops() -> None:
    # .Files.Get reads these links: the chart can never carry other rules than CI checks.
    root = CHART.parents[1]
    for link, target in (
        ("alerts.yml", root / "ops" / "prometheus" / "alerts.yml"),
        ("availability-dashboard.json", root / "ops" / "grafana" / "availability-dashboard.json"),
    ):
        path = CHART / "files" / link
        assert path.is_symlink() and path.resolve() == target.resolve(), link
