"""The SQL of the dashboards' history panels, against the historian's schema
(services/historian/migrations).

Series are stored in simulated time from the historian's epoch (2000-01-01); a panel draws
them on the run's wall-clock axis instead, ``runs.started_at + simulated seconds /
real_time_factor`` (a factor of 1 for a run that was not paced), the mapping
``services/historian/measured.py`` uses for measurements. A live run then lines up with
the Prometheus panels beside it, and the dashboard's time range selects the simulated
window it covers (the filter is on the stored ``time``/``bucket``, so indexes serve it).

Grafana's SQL macros take no parentheses inside their arguments, so the axis is computed
in a CTE (``t``) and the macros see a bare column. ``$site``, ``$run`` and ``$study`` are
single-value template variables: Grafana pastes them with quotes doubled, inside the
quotes written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.historian.schema import CDU_COLUMNS, METRICS, ROLLUP_METRICS

EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
RUN = (
    "r AS (SELECT started_at, CASE WHEN real_time_factor > 0 AND real_time_factor <"
    " 'Infinity' THEN real_time_factor ELSE 1 END AS rate FROM runs"
    " WHERE run_id = '$run' AND site_id = '$site')"
)
# (rollup table, bucket width in simulated ms): the widest whose width fits the panel's
# interval is read, so a year-long run draws from hourly buckets.
ROLLUPS = (("site_series_1h", 3_600_000), ("site_series_1m", 60_000))


@dataclass(frozen=True)
class Col:
    """One drawn series: ``column`` of the table reduced by ``agg`` (avg, min, max) per
    panel interval, shown as ``label``; ``scale`` multiplies it (W -> MW)."""

    column: str
    label: str
    agg: str = "avg"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.agg not in ("avg", "min", "max"):
            raise ValueError(f"{self.column}: agg {self.agg!r} is not avg, min or max")


def _window(column: str) -> str:
    return (
        f"x.{column} >= {EPOCH} + ($__timeFrom() - r.started_at) * r.rate"
        f" AND x.{column} <= {EPOCH} + ($__timeTo() - r.started_at) * r.rate"
    )


def _axis(column: str) -> str:
    return f"r.started_at + (x.{column} - {EPOCH}) / r.rate AS t"


def _scaled(expr: str, scale: float) -> str:
    return expr if scale == 1 else f"{expr} * {scale:g}"


def site_series(cols: Sequence[Col]) -> str:
    """``cols`` of ``site_series`` per panel interval: from the rollups when every column
    has one (the exact combination: avg = sum of sums / sum of counts), else the raw rows."""
    unknown = [c.column for c in cols if c.column not in METRICS]
    if unknown:
        raise ValueError(f"site_series has no column {unknown[0]!r}")
    if all(c.column in ROLLUP_METRICS for c in cols):
        return _rollup_series(cols)
    needed = ", ".join(dict.fromkeys(f"x.{c.column}" for c in cols))
    values = ", ".join(f'{_scaled(f"{c.agg}({c.column})", c.scale)} AS "{c.label}"' for c in cols)
    return (
        f"WITH {RUN},\n"
        f"s AS (SELECT {_axis('time')}, {needed} FROM site_series x, r\n"
        f"  WHERE x.run_id = '$run' AND {_window('time')})\n"
        f"SELECT $__timeGroupAlias(t, $__interval), {values}\n"
        "FROM s GROUP BY 1 ORDER BY 1"
    )


def _rollup_series(cols: Sequence[Col]) -> str:
    parts = {
        "avg": lambda c: f"{c}_sum, x.{c}_count",
        "min": lambda c: f"{c}_min",
        "max": lambda c: f"{c}_max",
    }
    needed = ", ".join(dict.fromkeys(f"x.{parts[c.agg](c.column)}" for c in cols))
    selects = []
    for i, (table, width_ms) in enumerate(ROLLUPS):
        # The widest rollup whose bucket fits the interval (in simulated ms); the last one
        # answers every narrower interval.
        fits = f"$__interval_ms * r.rate >= {width_ms}"
        if i + 1 < len(ROLLUPS):
            condition = fits
        else:
            condition = f"$__interval_ms * r.rate < {ROLLUPS[i - 1][1]}" if i else "true"
        selects.append(
            f"SELECT {_axis('bucket')}, {needed} FROM {table} x, r\n"
            f"  WHERE {condition} AND x.run_id = '$run' AND {_window('bucket')}"
        )
    combine = {
        "avg": lambda c: f"sum({c}_sum) / nullif(sum({c}_count), 0)",
        "min": lambda c: f"min({c}_min)",
        "max": lambda c: f"max({c}_max)",
    }
    values = ", ".join(f'{_scaled(combine[c.agg](c.column), c.scale)} AS "{c.label}"' for c in cols)
    union = "\n  UNION ALL\n".join(selects)
    return (
        f"WITH {RUN},\n"
        f"s AS (\n{union})\n"
        f"SELECT $__timeGroupAlias(t, $__interval), {values}\n"
        "FROM s GROUP BY 1 ORDER BY 1"
    )


def cdu_series(column: str, label: str) -> str:
    """``cdu_series.column`` per CDU (one drawn series each, named ``CDU <n>``)."""
    if column not in CDU_COLUMNS[4:]:
        raise ValueError(f"cdu_series has no value column {column!r}")
    return (
        f"WITH {RUN},\n"
        f"s AS (SELECT {_axis('time')}, x.cdu, x.{column} FROM cdu_series x, r\n"
        f"  WHERE x.run_id = '$run' AND {_window('time')})\n"
        "SELECT $__timeGroupAlias(t, $__interval), 'CDU ' || cdu AS metric,"
        f' avg({column}) AS "{label}"\n'
        "FROM s GROUP BY 1, 2 ORDER BY 1, 2"
    )


# ---- tables

RUNS = (
    'SELECT run_id AS "run", status, started_at AS "started", ended_at AS "ended",\n'
    '  dt_s AS "dt (s)", last_step * dt_s AS "simulated (s)",'
    ' real_time_factor AS "pace", end_reason AS "end"\n'
    "FROM runs WHERE site_id = '$site' ORDER BY started_at DESC LIMIT 50"
)

EVENTS = (
    f"WITH {RUN}\n"
    f'SELECT r.started_at + (e.time - {EPOCH}) / r.rate AS "time", e.kind,'
    " e.body->>'cause' AS cause, e.body::text AS body\n"
    "FROM events e, r WHERE e.run_id = '$run' ORDER BY e.time DESC LIMIT 100"
)

# ---- what-if studies: the `studies` table, `result` being the Study message as JSON
# (protobuf JSON names: camelCase fields, map keys as they are, false/0 omitted).

STUDIES = (
    'SELECT created_at AS "created", name, state, variants, wall_s AS "wall (s)",'
    " study_id\n"
    "FROM studies WHERE site_id = '$site' AND $__timeFilter(created_at)\n"
    "ORDER BY created_at DESC LIMIT 100"
)

# The KPIs shown per variant (twin_core/kpis.py names), with their column titles.
STUDY_KPIS = (
    ("pue", "PUE"),
    ("peak_facility_mw", "peak facility (MW)"),
    ("max_gpu_temp_c", "hottest GPU (°C)"),
    ("max_supply_c", "hottest supply (°C)"),
    ("throttled_gpu_hours", "throttled (GPU h)"),
    ("chiller_hours", "chiller hours"),
    ("cost_usd", "cost (USD)"),
    ("emissions_tco2", "CO2 (t)"),
    ("cfe_score", "CFE score"),
    ("max_grid_ramp_mw_per_s", "grid ramp (MW/s)"),
)


def _variants(key: str, kpis: Sequence[tuple[str, str]]) -> str:
    values = ",\n  ".join(f"(v->'{key}'->>'{k}')::float8 AS \"{title}\"" for k, title in kpis)
    return (
        "SELECT v->>'name' AS variant, coalesce((v->>'passed')::boolean, false) AS passed,\n"
        f"  {values}\n"
        "FROM studies, jsonb_array_elements(result->'variants') WITH ORDINALITY AS x(v, i)\n"
        "WHERE study_id = '$study' ORDER BY i"
    )


VARIANT_KPIS = _variants("kpis", STUDY_KPIS)
VARIANT_DELTAS = _variants("deltas", STUDY_KPIS[1:8])
VARIANT_COST = _variants("kpis", (("cost_usd", "cost (USD)"),))

CONSTRAINTS = (
    "SELECT v->>'name' AS variant, c->>'name' AS \"constraint\","
    " (c->>'value')::float8 AS value,\n"
    "  (c->>'limit')::float8 AS \"limit\", coalesce((c->>'passed')::boolean, false) AS passed\n"
    "FROM studies, jsonb_array_elements(result->'variants') WITH ORDINALITY AS x(v, i),\n"
    "  jsonb_array_elements(v->'constraints') AS k(c)\n"
    "WHERE study_id = '$study' ORDER BY i, 2"
)

# ---- template variables

SITES = "SELECT DISTINCT site_id FROM runs ORDER BY 1"
RUN_CHOICES = (
    "SELECT run_id AS __value, run_id || ' (' || status || ', '"
    " || to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ')' AS __text\n"
    "FROM runs WHERE site_id = '$site' ORDER BY started_at DESC"
)
STUDY_CHOICES = (
    "SELECT study_id AS __value, name || ' (' || state || ', '"
    " || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ')' AS __text\n"
    "FROM studies WHERE site_id = '$site' ORDER BY created_at DESC"
)
