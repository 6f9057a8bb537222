"""deploy/prometheus/alerts.yaml refers only to metrics the processes export:
a renamed metric must not leave an alert that can never fire."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

# Every module that defines metrics, so that the registry holds them all.
import gateway.observability  # noqa: F401
import meshkit.metrics  # noqa: F401
import services.agent.metrics  # noqa: F401
import services.knowledge.metrics  # noqa: F401
import services.rag_engine.metrics  # noqa: F401

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yaml"
# Written by Prometheus itself for every scrape target.
PROMETHEUS_OWN = {"up"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
             "summary": ("", "_count", "_sum")}


def exported_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, keywords, labels or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for found in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        is_function = expr[found.end():].lstrip().startswith("(")
        if not is_function and found.group().lower() not in _KEYWORDS:
            names.add(found.group())
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_metric_names_are_read_from_promql():
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(http_server_request_duration_seconds_bucket'
            '{route!~".*:(stream|watch)", job="a_b"}[5m]))) > 5 and on (job) up == 1e3 or vector(0)')
    assert metric_names(expr) == {"http_server_request_duration_seconds_bucket", "up"}


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_reads_metrics_that_exist_and_says_what_is_wrong(rule):
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    missing = names - exported_names() - PROMETHEUS_OWN
    assert not missing, f"{rule['alert']} reads metrics no process exports: {sorted(missing)}"
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
