"""A strict checker of protocol-v4 payload lines, from the agent's Go structs.

Mirrors infrastructure-agent pkg/integrations/v4/protocol/types.go (DataV4, Dataset,
Metric) and the limits in nr_integration_protocol.md section 1.5.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from workerwatch.output.catalogue import CATALOGUE

DATASET_KEYS = {"common", "metrics", "entity", "inventory", "events", "ignore_entity"}
METRIC_TYPES = {"gauge", "count", "summary", "cumulative-count", "rate", "cumulative-rate"}
MAX_LINE = 5 * 1024 * 1024
# Every metric name any test saw in a checked payload: the session checks at its end that
# the catalogue lists nothing that no run emitted (tests/conftest.py).
EMITTED: set[str] = set()
MAX_STRING = 4095


def _no_constants(name: str) -> Any:
    raise AssertionError(f"payload contains {name}, which Go's encoding/json rejects")


def _scalar_attrs(attrs: Any, where: str) -> None:
    assert isinstance(attrs, dict), f"{where}: attributes must be an object"
    assert len(attrs) <= 150, f"{where}: more than 150 attributes"
    for key, value in attrs.items():
        assert isinstance(key, str) and 0 < len(key) <= 255, f"{where}: bad attribute name {key!r}"
        assert isinstance(value, str | int | float | bool), f"{where}: {key} is {type(value)}"
        if isinstance(value, str):
            assert len(value) <= MAX_STRING, f"{where}: {key} longer than {MAX_STRING}"
        if isinstance(value, float):
            assert math.isfinite(value), f"{where}: {key} not finite"


def check_line(line: str) -> dict[str, Any]:
    """Parse one stdout line and assert it is a valid v4 payload; returns it."""
    assert line.endswith("\n") and line.count("\n") == 1, "payload must be exactly one line"
    assert len(line.encode()) <= MAX_LINE, "payload larger than 5 MB"
    payload = json.loads(line, parse_constant=_no_constants)
    assert payload["protocol_version"] == "4"
    integration = payload["integration"]
    assert isinstance(integration["name"], str) and integration["name"]
    assert isinstance(integration["version"], str) and integration["version"]
    assert isinstance(payload["data"], list) and payload["data"]
    for dataset in payload["data"]:
        assert set(dataset) <= DATASET_KEYS, f"unknown dataset keys {set(dataset) - DATASET_KEYS}"
        assert "entity" not in dataset, "worker metrics attach to the host: no entity"
        assert dataset.get("ignore_entity") is False
        common = dataset["common"]
        assert isinstance(common["timestamp"], int) and common["timestamp"] > 1_500_000_000_000
        assert isinstance(common["interval.ms"], int) and common["interval.ms"] > 0
        _scalar_attrs(common["attributes"], "common")
        for m in dataset["metrics"]:
            assert isinstance(m["name"], str) and len(m["name"]) < 255
            assert m["type"] in METRIC_TYPES, m
            assert isinstance(m["value"], int | float) and not isinstance(m["value"], bool), m
            assert math.isfinite(m["value"]), m
            _scalar_attrs(m["attributes"], m["name"])
            if m["type"] == "count":
                assert isinstance(m.get("interval.ms"), int) and m["interval.ms"] > 0, m
            EMITTED.add(m["name"])
            spec = CATALOGUE.get(m["name"])
            assert spec is not None, f"{m['name']} is not in the catalogue"
            assert spec.type == m["type"], m
            assert set(m["attributes"]) <= set(spec.attributes), m
        for event in dataset["events"]:
            assert isinstance(event["summary"], str) and event["summary"], event
            assert event.get("category") == "workerwatch"
            _scalar_attrs(event.get("attributes", {}), "event")
        assert isinstance(dataset["inventory"], dict)
        for key, item in dataset["inventory"].items():
            assert isinstance(key, str) and len(key) <= 375
            _scalar_attrs(item, f"inventory {key}")
    return payload


def metrics_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for d in payload["data"] for m in d["metrics"]]


def find(payload: dict[str, Any], name: str, **attrs: Any) -> list[dict[str, Any]]:
    return [
        m
        for m in metrics_of(payload)
        if m["name"] == name and all(m["attributes"].get(k) == v for k, v in attrs.items())
    ]


def write_config(path, data: dict[str, Any]):
    path.write_text(yaml.safe_dump(data))
    return path


def tagged_config(
    tmp_path, tag: str, name: str = "fleet", top: dict[str, Any] | None = None, **group: Any
):
    """``tmp_path/config.yml``: the state under ``tmp_path/state`` and one group ``name``
    matching the tests/children/worker_kinds.py processes tagged ``tag``; ``group`` adds
    the group's keys (``stall_after="2s"``), ``top`` top-level ones (``{"deadline": "2s"}``)."""
    matching = {"name": name, "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"}, **group}
    data = {"state_dir": str(tmp_path / "state"), "groups": [matching], **(top or {})}
    return write_config(tmp_path / "config.yml", data)
