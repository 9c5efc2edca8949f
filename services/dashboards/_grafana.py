"""Grafana's dashboard JSON model, as small builders: panels on a 24-column grid,
Prometheus and PostgreSQL targets, template variables.

Panels name their datasource through the dashboard's datasource variables
(``${prometheus}``, ``${history}``), whose defaults are the uids the chart provisions
(``twin-prometheus``, ``twin-history``): the same JSON works loaded by the sidecar and
imported by hand into a Grafana with other datasources (pick them in the two drop-downs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.runtime import metrics

PROMETHEUS_UID = "twin-prometheus"
HISTORY_UID = "twin-history"
POSTGRES_TYPE = "grafana-postgresql-datasource"
PROM = {"type": "prometheus", "uid": "${prometheus}"}
SQL = {"type": POSTGRES_TYPE, "uid": "${history}"}
SCHEMA_VERSION = 39
TAG = "ai-factory-twin"
RUN_LABELS = '{site="$site",run="$run"}'


def metric(name: str) -> str:
    """``name``, checked against the services' catalog (an unknown name fails the
    generator, not a dashboard at run time)."""
    if name not in metrics.exposed_names():
        raise KeyError(f"{name}: not a metric the services export (services/runtime/metrics.py)")
    return name


def live(name: str, scale: float = 1.0) -> str:
    """The run's gauge ``name`` (labelled with the chosen site and run)."""
    expr = f"{metric(name)}{RUN_LABELS}"
    return expr if scale == 1 else f"{expr} * {scale:g}"


@dataclass
class Panel:
    """One panel; ``w``/``h`` in grid units (24 columns wide)."""

    type: str
    title: str
    targets: list[dict[str, Any]]
    w: int = 6
    h: int = 8
    unit: str | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    def json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        datasource = self.targets[0]["datasource"] if self.targets else None
        defaults = dict(self.defaults)
        if self.unit:
            defaults["unit"] = self.unit
        out: dict[str, Any] = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "gridPos": {"h": self.h, "w": self.w, "x": x, "y": y},
            "datasource": datasource,
            "targets": self.targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self.options,
        }
        if self.description:
            out["description"] = self.description
        return out


def prom(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"refId": "A", "datasource": PROM, "expr": expr}
    if legend:
        target["legendFormat"] = legend
    if instant:
        target["instant"], target["range"] = True, False
    return target


def sql(query: str, table: bool = False) -> dict[str, Any]:
    return {
        "refId": "A",
        "datasource": SQL,
        "editorMode": "code",
        "rawQuery": True,
        "format": "table" if table else "time_series",
        "rawSql": query,
    }


def stat(title: str, expr: str, unit: str, legend: str = "", **kw: Any) -> Panel:
    """The latest value of one PromQL expression (``legend``: its series' name)."""
    options = {"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"}
    options.update(kw.pop("options", {}))
    return Panel(
        "stat",
        title,
        [prom(expr, legend, instant=True)],
        w=kw.pop("w", 4),
        h=kw.pop("h", 4),
        unit=unit,
        options=options,
        **kw,
    )


def graph(title: str, targets: list[dict[str, Any]], unit: str, **kw: Any) -> Panel:
    """A time series panel; its targets get the refIds A, B, C, ... in order."""
    targets = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]
    return Panel("timeseries", title, targets, w=kw.pop("w", 12), unit=unit, **kw)


def table(title: str, query: str, **kw: Any) -> Panel:
    return Panel("table", title, [sql(query, table=True)], w=kw.pop("w", 24), **kw)


@dataclass
class Row:
    """A titled row of panels, laid left to right, wrapping at 24 columns."""

    title: str
    panels: list[Panel]


def _variables(study: bool) -> list[dict[str, Any]]:
    from services.dashboards import _sql

    def datasource(name: str, label: str, plugin: str, uid: str) -> dict[str, Any]:
        return {
            "type": "datasource",
            "name": name,
            "label": label,
            "query": plugin,
            "current": {"text": uid, "value": uid},
            "hide": 0,
        }

    def query(name: str, label: str, sql_text: str) -> dict[str, Any]:
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": SQL,
            "query": sql_text,
            "definition": sql_text,
            "refresh": 1,  # on dashboard load: a new run appears without an edit
            "sort": 0,
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "current": {},
        }

    out = [
        datasource("prometheus", "Prometheus", "prometheus", PROMETHEUS_UID),
        datasource("history", "History", POSTGRES_TYPE, HISTORY_UID),
        query("site", "Site", _sql.SITES),
        query("run", "Run", _sql.RUN_CHOICES),
    ]
    if study:
        out.append(query("study", "Study", _sql.STUDY_CHOICES))
    return out


def dashboard(
    uid: str, title: str, description: str, rows: list[Row], study: bool = False
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_h = 0
        for panel in row.panels:
            if x + panel.w > 24:
                x, y, line_h = 0, y + line_h, 0
            panels.append(panel.json(next_id, x, y))
            next_id += 1
            x += panel.w
            line_h = max(line_h, panel.h)
        y += line_h
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": _variables(study)},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "AI Factory Twin",
                "tags": [TAG],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }
