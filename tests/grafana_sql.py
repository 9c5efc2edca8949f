"""Grafana's substitutions in a PostgreSQL panel query, done here as Grafana does them, so
that a dashboard's SQL can run on a real PostgreSQL in a test.

- Template variables (``$site``, ``${site}``): a single-value variable is pasted as it is,
  with single quotes doubled (the SQL datasources' ``interpolateVariable``); the query
  writes the quotes around it.
- ``$__interval_ms`` and ``$__interval`` (the panel's interval), before the macros.
- The macros of Grafana's PostgreSQL datasource without TimescaleDB mode
  (``pkg/tsdb/grafana-postgresql-datasource/macros.go``): ``$__timeFilter(c)`` is
  ``c BETWEEN '<from>' AND '<to>'``, ``$__timeFrom()``/``$__timeTo()`` the quoted RFC 3339
  times, ``$__timeGroup(c, <interval>)`` ``floor(extract(epoch from c)/<s>)*<s>``, and
  ``$__timeGroupAlias`` the same ``AS "time"``. Like Grafana's macro pattern
  (``\\$name\\(([^)]*)\\)``), an argument cannot hold a parenthesis.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

MACRO = re.compile(r"\$(__\w+)\(([^)]*)\)")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_text(seconds: float) -> str:
    """An interval as Grafana writes ``$__interval`` (``1m``, ``30s``, ``500ms``)."""
    for unit in ("d", "h", "m", "s"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{round(seconds * 1000)}ms"


def _seconds(text: str) -> float:
    match = re.fullmatch(r"\s*'?(\d+(?:\.\d+)?)(ms|s|m|h|d)'?\s*", text)
    assert match, f"not an interval: {text!r}"
    return float(match[1]) * UNITS[match[2]]


def _time(at: datetime) -> str:
    return "'" + at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def expand(
    query: str,
    variables: dict[str, str],
    start: datetime,
    end: datetime,
    interval_s: float = 60.0,
) -> str:
    """``query`` as Grafana sends it to PostgreSQL."""
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        pasted = value.replace("'", "''")
        query = query.replace(f"${{{name}}}", pasted)
        query = re.sub(rf"\${name}\b", lambda _, p=pasted: p, query)
    query = query.replace("$__interval_ms", _number(interval_s * 1000))
    query = query.replace("$__interval", interval_text(interval_s))

    def macro(match: re.Match) -> str:
        name, args = match[1], [a.strip() for a in match[2].split(",")] if match[2] else []
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN {_time(start)} AND {_time(end)}"
        if name == "__timeFrom":
            return _time(start)
        if name == "__timeTo":
            return _time(end)
        if name in ("__timeGroup", "__timeGroupAlias"):
            width = _number(_seconds(args[1]))
            group = f"floor(extract(epoch from {args[0]})/{width})*{width}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise AssertionError(f"macro ${name} is not one this helper knows")

    query = MACRO.sub(macro, query)
    left = re.findall(r"\$\{?\w+", query)
    assert not left, f"not substituted: {left}"
    return query
