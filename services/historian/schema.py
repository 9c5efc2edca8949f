"""The history tables as the historian writes them, derived from the quantities contract.

``site_series`` holds one column per stored quantity (``twin_core.contract.HISTORY``); the
SQL migrations create them, and ``tests/test_contract.py`` checks that they match. This
module imports no JAX and nothing of the writer, so the read side (the History API) can
use it alone; ``schema_problems`` says what a migrated database lacks for the contract
(``twin db migrate`` fails with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from twin.telemetry.v1 import telemetry_pb2
from twin_core import contract

# The time origin of every series: time = EPOCH + simulated seconds (rollup buckets too).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

KEY_COLUMNS = ("run_id", "step", "time")
KEY_TYPES = ("text", "int8", "timestamptz")
# The value columns of site_series: the stored quantities, by their contract names.
METRICS: tuple[str, ...] = tuple(q.name for q in contract.HISTORY)
SITE_COLUMNS = (*KEY_COLUMNS, *METRICS)
SITE_TYPES = (*KEY_TYPES, *(contract.COPY_TYPES[q.sql] for q in contract.HISTORY if q.sql))
# The quantities summarised in site_series_1m / _1h.
ROLLUP_METRICS: tuple[str, ...] = contract.ROLLUP
CDU_COLUMNS = (*KEY_COLUMNS, "cdu", "tcs_supply_c", "heat_liquid_w")
CDU_TYPES = (*KEY_TYPES, "int4", "float8", "float8")
RACK_COLUMNS = (*KEY_COLUMNS, "quantity", "values")
RACK_TYPES = (*KEY_TYPES, "text", "float4[]")

# target table -> (staging table, columns, binary COPY types, conflict key)
TABLES: dict[str, tuple[str, Sequence[str], Sequence[str], str]] = {
    "site_series": ("stage_site_series", SITE_COLUMNS, SITE_TYPES, "run_id, step, time"),
    "cdu_series": ("stage_cdu_series", CDU_COLUMNS, CDU_TYPES, "run_id, step, cdu, time"),
    "rack_arrays": ("stage_rack_arrays", RACK_COLUMNS, RACK_TYPES, "run_id, step, quantity, time"),
}


ROLLUP_TABLES = ("site_series_1m", "site_series_1h")
ROLLUP_SUFFIXES = ("avg", "min", "max", "last", "sum", "count")


def schema_problems(conn: psycopg.Connection) -> list[str]:
    """What the migrated database lacks for the contract, one line each (empty when it
    matches): a stored quantity without its ``site_series`` column (or with another type),
    a rolled-up quantity without its rollup columns."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        (["site_series", *ROLLUP_TABLES],),
    ).fetchall()
    columns: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        columns.setdefault(table, {})[column] = data_type
    problems = []
    for q in contract.HISTORY:
        found = columns.get("site_series", {}).get(q.name)
        if found is None:
            problems.append(
                f"site_series.{q.name}: no column for the stored quantity {q.name!r} of"
                f" twin_core/contract.py ({q.sql}); add a migration"
            )
        elif found != q.sql:
            problems.append(f"site_series.{q.name}: column is {found}, the contract says {q.sql}")
    for table in ROLLUP_TABLES:
        for name in ROLLUP_METRICS:
            missing = [s for s in ROLLUP_SUFFIXES if f"{name}_{s}" not in columns.get(table, {})]
            if missing:
                problems.append(
                    f"{table}.{name}_{missing[0]}: no rollup column for the rolled-up quantity"
                    f" {name!r} of twin_core/contract.py; add a migration"
                )
    return problems


# -------------------------------------------------------------------------- measurements

# measurements: what telemetry.<site>.> carried (migration 0008). A quantity is stored by
# its telemetry name: the proto enum's name without ``QUANTITY_``, lower case (the point
# map's names, e.g. ``supply_temperature_c``).
MEASUREMENT_COLUMNS = ("site_id", "source", "entity", "quantity", "time", "value")
MEASUREMENT_TYPES = ("text", "text", "text", "text", "timestamptz", "float8")
MEASUREMENT_KEY = "site_id, entity, quantity, source, time"
MEASUREMENT_ROLLUP = "measurements_1m"
QUANTITY_NAMES: dict[int, str] = {
    number: name.removeprefix("QUANTITY_").lower()
    for name, number in telemetry_pb2.Quantity.items()
    if number != telemetry_pb2.QUANTITY_UNSPECIFIED
}


@dataclass(frozen=True)
class Modelled:
    """Where the model keeps the counterpart of a measured quantity: ``table`` and
    ``column`` (for ``rack_arrays``, the ``quantity`` of the row, whose ``values`` hold
    every rack of the site)."""

    table: str
    column: str


# (entity kind, telemetry quantity) -> the modelled series of the same thing. The entity
# kind is the first segment of the measurement's entity path: ``meter``, ``battery`` and
# ``weather`` are the site's (one row per step in site_series), ``cdu/<i>`` a CDU
# (cdu_series), ``rack/<slot>/<cdu>`` a rack (rack_arrays, every ``rack_every`` steps).
# Measured quantities not listed here have no modelled series (their modelled side is NaN).
MODELLED: dict[tuple[str, str], Modelled] = {
    ("meter", "meter_power_w"): Modelled("site_series", "grid_w"),
    ("battery", "battery_power_w"): Modelled("site_series", "battery_w"),
    ("battery", "battery_soc"): Modelled("site_series", "soc"),
    ("weather", "ambient_temperature_c"): Modelled("site_series", "ambient_c"),
    ("cdu", "supply_temperature_c"): Modelled("cdu_series", "tcs_supply_c"),
    ("rack", "rack_power_w"): Modelled("rack_arrays", "rack_ac_w"),
}
