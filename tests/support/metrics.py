"""deploy/metrics.yml and what checks against it: the PromQL scanner, exposition checks.

deploy/metrics.yml is the one list of metric names the alert rules and the dashboard may
use; tests/unit/test_deploy.py checks the rules and dashboard against it, and the /metrics
tests (unit and integration) check a real exposition against it. `samples` and `value`
read an exposition's figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRICS = DEPLOY / "metrics.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "permit-push.json"

PROMTOOL = shutil.which("promtool") or "promtool"
# A laptop without promtool skips these; CI (CI=true) installs it and must run them.
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None and os.environ.get("CI") != "true",
    reason="promtool not on PATH (apt-get install --no-install-recommends prometheus)",
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


# --- Metric names: deploy/metrics.yml is the one list ---------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it is matched on) for each series selector in expr.

    A small scanner, not a parser: enough for the expressions in this repository, and
    promtool (where installed) checks that each one really is valid PromQL.
    """
    # Label matchers keep their names but lose their values (which may hold anything).
    text = _STRING.sub('""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries: [5m], [$__rate_interval]
    text = _GROUPING.sub(" ", text)  # by (le, route) names labels, not metrics
    found = []
    for match in _SELECTOR.finditer(text):
        name, matchers, call = match.groups()
        if call and not matchers:  # a function or an aggregation: rate(, sum(
            continue
        if name in _KEYWORDS:
            continue
        found.append((name, set(_MATCHER.findall(matchers or ""))))
    return found


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [
        target["expr"]
        for panel in dashboard_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        # label_values(METRIC, label): the metric is the selector part.
        exprs += re.findall(r"label_values\(([^,]+),", query)
    return exprs


def deploy_exprs() -> dict[str, str]:
    """Every PromQL expression of the alert rules and the dashboard, by where it is."""
    exprs = {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}
    exprs.update({f"dashboard expr {i}": expr for i, expr in enumerate(dashboard_exprs())})
    return exprs


def known_metrics() -> dict[str, dict[str, Any]]:
    listed = load_yaml(METRICS)
    return {**listed["receiver"], **listed["prometheus"]}


def metric_names_used() -> set[str]:
    """The metric names (histograms by their base name) the rules and dashboard use."""
    used = set()
    histograms = {n for n, m in known_metrics().items() if m["type"] == "histogram"}
    for expr in deploy_exprs().values():
        for name, _ in promql_selectors(expr):
            base = next(
                (name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name
            )
            used.add(base if base in histograms else name)
    return used


def exposition_problems(text: str) -> list[str]:
    """What a real /metrics text lacks of deploy/metrics.yml's receiver metrics.

    For the receiver's own /metrics test: every listed metric must have samples, with
    exactly the listed labels (plus `le` on histogram buckets). prometheus-client shows a
    labelled metric only once a child exists, so that test must push first (or the
    receiver must create the children at start).
    """
    labels_by_sample: dict[str, set[frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels_by_sample.setdefault(sample.name, set()).add(frozenset(sample.labels))
    problems = []
    for name, metric in load_yaml(METRICS)["receiver"].items():
        labels = frozenset(metric["labels"])
        if metric["type"] == "histogram":
            wanted = {name + "_bucket": labels | {"le"}, name + "_sum": labels}
            wanted[name + "_count"] = labels
        else:
            wanted = {name: labels}
        for sample, sample_labels in wanted.items():
            seen = labels_by_sample.get(sample)
            if not seen:
                problems.append(f"{sample}: not exposed")
            elif seen != {sample_labels}:
                problems.append(f"{sample}: labels {sorted(map(sorted, seen))}")
    return problems


# --- An exposition's samples -------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, /, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))
