"""Read the Grafana dashboard and pick PromQL apart (metric names, grouping labels)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "ecgfm-ked.json"

# Grafana's built-in variables, replaced by what Grafana would send for a 5-minute view.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${__range}": "5m",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_METRIC = re.compile(r"\b(ecgfm_[A-Za-z0-9_:]*)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"\b(ecgfm_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def iter_panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def dashboard_exprs(dashboard: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, Grafana variables replaced."""
    dashboard = dashboard or load_dashboard()
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def metric_names(expr: str) -> set[str]:
    """Series names (ecgfm_...) an expression selects; quoted strings are ignored."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in _GROUPING.findall(expr):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    return labels


def matcher_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for _, body in _MATCHER.findall(expr):
        labels.update(_MATCHER_LABEL.findall(_STRING.sub('""', body)))
    return labels


def exposed_series() -> dict[str, tuple[str, set[str]]]:
    """Series name -> (family name, label names) for every metric in app/ops/metrics.py."""
    from app.ops import metrics

    series: dict[str, tuple[str, set[str]]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase) or not obj._name.startswith("ecgfm_"):
            continue
        name, labels = obj._name, set(obj._labelnames)
        kind = obj._type
        if kind == "counter":
            names = [f"{name}_total"]
        elif kind == "histogram":
            names = [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
            labels = labels | {"le"}
        elif kind == "gauge":
            names = [name]
        else:  # pragma: no cover - a new metric type needs a rule here
            raise AssertionError(f"no series rule for {kind} {name}")
        for series_name in names:
            series[series_name] = (name, labels)
    return series
