"""definitions/metrics.yml, the code's catalogue and what the code emits stay in step."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from workerwatch.catalogue import CATALOGUE

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
    """A catalogue entry no code path emits is a metric nobody will ever see."""
    code = "\n".join(p.read_text() for p in SOURCE.rglob("*.py") if p.name != "catalogue.py")
    # Metric namespaces only: "workerwatch.heartbeat" is a logger, "workerwatch.transition" an
    # event attribute.
    pattern = r'"(workerwatch\.(?:worker|group|swf|sqs|integration)\.[A-Za-z.]+)"'
    emitted = set(re.findall(pattern, code))
    assert set(CATALOGUE) <= emitted, sorted(set(CATALOGUE) - emitted)
    assert emitted <= set(CATALOGUE), sorted(emitted - set(CATALOGUE))


def test_readme_metric_table_points_at_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    assert "definitions/metrics.yml" in readme
