"""definitions/metrics.yml, the code's catalogue and what the code emits stay in step."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from workerwatch.output import catalogue
from workerwatch.output.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "integration" / "workerwatch"


def _yml():
    return {m["name"]: m for m in yaml.safe_load((ROOT / "definitions" / "metrics.yml").read_text())["metrics"]}  # fmt: skip


def test_metrics_yml_and_catalogue_list_the_same_metrics():
    documented = _yml()
    assert set(documented) == set(CATALOGUE)
    for name, spec in CATALOGUE.items():
        entry = documented[name]
        assert entry["type"] == spec.type, name
        assert entry["unit"] == spec.unit, name
        assert tuple(entry["attributes"]) == spec.attributes, name
        assert entry["meaning"].strip(), name


def test_every_catalogued_metric_is_emitted_somewhere_in_the_code():
    """A catalogue entry no code path emits is a metric nobody will ever see.

    Code names metrics only through the catalogue's constants: a metric name written as a
    string anywhere else is a typo waiting to happen.
    """
    code = "\n".join(p.read_text() for p in SOURCE.rglob("*.py") if p.name != "catalogue.py")
    # Metric namespaces only: "workerwatch.heartbeat" is a logger, "workerwatch.transition" an
    # event attribute.
    pattern = r'"(workerwatch\.(?:worker|group|swf|sqs|integration)\.[A-Za-z.]+)"'
    assert re.findall(pattern, code) == [], "metric names outside the catalogue"
    constants = {
        value: name
        for name, value in vars(catalogue).items()
        if name.isupper() and isinstance(value, str) and value in CATALOGUE
    }
    assert set(constants) == set(CATALOGUE), "every metric has its constant"
    unused = sorted(n for n in constants.values() if not re.search(rf"\b{n}\b", code))
    assert unused == [], f"catalogued metrics no code emits: {unused}"


def test_readme_metric_table_points_at_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    assert "definitions/metrics.yml" in readme
