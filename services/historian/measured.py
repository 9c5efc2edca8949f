"""The SQL behind ``HistoryService.QueryMeasured``: one entity's measured series beside the
model's series of the same thing in one run, bucketed on the run's time axis.

Measurements are stamped in wall-clock time (their source time), the model's series in
simulated time from the writer's epoch. A measurement at wall time ``t`` is placed at
simulated second ``(t - runs.started_at) * real_time_factor`` (1 when the run was not
paced): right for a live run that kept its pace; a pause shifts what follows it. Buckets
of width ``w`` start at multiples of ``w`` simulated seconds, on both sides; each side is
the average of its samples in the bucket (every source of the measurement together).

The modelled side comes from ``schema.MODELLED`` (the one table of measured quantity ->
modelled column): ``site_series`` for the site's entities, ``cdu_series`` for ``cdu/<i>``,
``rack_arrays`` element ``slot * CDUs + cdu`` for ``rack/<slot>/<cdu>`` (the racks are
stored row-major, (slot, cdu), every ``rack_every`` steps only). Only parameterised SQL:
table and column names come from that table and are composed as identifiers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from services.historian.queries import (
    QueryError,
    RunNotFound,
    check_bucket,
    check_id,
    check_window,
)
from services.historian.schema import EPOCH, MODELLED, QUANTITY_NAMES, Modelled
from twin_core.inputs import clip

MAX_BUCKETS = 10_000  # rows per answer; a wider bucket answers a longer window
MAX_ENTITY_CHARS = 128
INDEXED = {"cdu": 1, "rack": 2}  # entity kinds addressed by index: how many
KNOWN_QUANTITIES = tuple(QUANTITY_NAMES.values())


@dataclass(frozen=True)
class MeasuredQuery:
    run_id: str
    entity: str
    quantity: str = ""  # empty: the entity's one quantity with a modelled counterpart
    start_s: float | None = None
    end_s: float | None = None
    bucket_s: float = 60.0
    site_id: str = ""


@dataclass(frozen=True)
class MeasuredSeries:
    entity: str
    quantity: str
    modelled: str  # "table.column", or "" without a modelled counterpart
    rows: list[tuple[float, float, float]]  # (bucket start s, measured, modelled)


@dataclass(frozen=True)
class _Target:
    quantity: str
    modelled: Modelled | None
    index: tuple[int, ...]


def resolve(q: MeasuredQuery) -> _Target:
    """Check the request (``QueryError`` naming the field) and say what to read."""
    if not q.run_id:
        raise QueryError("run_id", "required")
    check_id("run_id", q.run_id)
    check_id("site_id", q.site_id)
    if not q.entity:
        raise QueryError("entity", "required (e.g. cdu/0, rack/3/1, meter)")
    if len(q.entity) > MAX_ENTITY_CHARS or not q.entity.isprintable():
        raise QueryError("entity", f"{clip(q.entity)!r} is not an entity path")
    check_window(q.start_s, q.end_s)
    check_bucket(q.bucket_s)
    if q.bucket_s <= 0:
        raise QueryError("bucket_s", "must be > 0 (each side is averaged per bucket)")
    kind, *parts = q.entity.split("/")
    quantity = q.quantity
    if not quantity:
        choices = [name for k, name in MODELLED if k == kind]
        if len(choices) != 1:
            known = ", ".join(choices or KNOWN_QUANTITIES)
            raise QueryError("quantity", f"required for entity {clip(q.entity)!r} (one of {known})")
        quantity = choices[0]
    elif quantity not in KNOWN_QUANTITIES:
        known = ", ".join(KNOWN_QUANTITIES)
        raise QueryError("quantity", f"unknown quantity {clip(quantity)!r} (known: {known})")
    modelled = MODELLED.get((kind, quantity))
    index: tuple[int, ...] = ()
    if modelled is not None and kind in INDEXED:
        ok = all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts)
        if len(parts) != INDEXED[kind] or not ok:
            shape = "/".join(["<i>"] * INDEXED[kind])
            raise QueryError("entity", f"{clip(q.entity)!r} is not {kind}/{shape}")
        index = tuple(int(p) for p in parts)
    elif modelled is not None and parts:
        raise QueryError("entity", f"{clip(q.entity)!r}: {kind} takes no index")
    return _Target(quantity, modelled, index)


@dataclass(frozen=True)
class _Run:
    site_id: str
    started_at: datetime
    rate: float  # simulated seconds per wall-clock second


async def _run(conn: psycopg.AsyncConnection, run_id: str, site_id: str) -> _Run:
    cur = await conn.execute(
        "SELECT site_id, started_at, real_time_factor FROM runs WHERE run_id = %s", (run_id,)
    )
    row = await cur.fetchone()
    if row is None or (site_id and row[0] != site_id):
        where = f" in site {site_id!r}" if site_id else ""
        raise RunNotFound(f"run_id: run {run_id!r} not found{where}")
    rate = float(row[2]) if row[2] and math.isfinite(row[2]) and row[2] > 0 else 1.0
    return _Run(row[0], row[1], rate)


# Window bounds beyond what a datetime holds are clamped: they select everything anyway.
LOWEST = datetime(1, 1, 2, tzinfo=UTC)
HIGHEST = datetime(9999, 12, 30, tzinfo=UTC)


def _at(base: datetime, seconds: float) -> datetime:
    try:
        return min(max(base + timedelta(seconds=seconds), LOWEST), HIGHEST)
    except OverflowError:
        return LOWEST if seconds < 0 else HIGHEST


def _sim_window(q: MeasuredQuery) -> tuple[datetime, datetime | None]:
    start = _at(EPOCH, q.start_s or 0.0)
    end = None if q.end_s is None else _at(EPOCH, q.end_s)
    return start, end


async def _measured(
    conn: psycopg.AsyncConnection, q: MeasuredQuery, run: _Run, quantity: str
) -> dict[int, float]:
    begin = _at(run.started_at, (q.start_s or 0.0) / run.rate)
    params: list[object] = [run.started_at, run.rate, q.bucket_s, run.site_id, q.entity]
    params += [quantity, begin]
    until = sql.SQL("")
    if q.end_s is not None:
        until = sql.SQL(" AND time < %s")
        params.append(_at(run.started_at, q.end_s / run.rate))
    statement = sql.SQL(
        "SELECT floor(extract(epoch FROM time - %s)::float8 * %s / %s) AS b, avg(value)"
        " FROM measurements WHERE site_id = %s AND entity = %s AND quantity = %s"
        " AND time >= %s{until} GROUP BY b ORDER BY b LIMIT {limit}"
    ).format(until=until, limit=sql.Literal(MAX_BUCKETS + 1))
    cur = await conn.execute(statement, params)
    return {int(b): float(v) for b, v in await cur.fetchall()}


async def _rack_element(conn: psycopg.AsyncConnection, run_id: str, index: tuple[int, ...]) -> int:
    """The 1-based element of ``rack_arrays.values`` that holds rack (slot, cdu)."""
    cur = await conn.execute(
        "SELECT (SELECT max(cdu) + 1 FROM cdu_series WHERE run_id = %s AND step ="
        " (SELECT min(step) FROM cdu_series WHERE run_id = %s)),"
        ' (SELECT cardinality("values") FROM rack_arrays WHERE run_id = %s'
        " AND quantity = 'rack_ac_w' LIMIT 1)",
        (run_id, run_id, run_id),
    )
    row = await cur.fetchone()
    cdus, racks = row if row is not None else (None, None)
    slot, cdu = index
    if not cdus or not racks or cdu >= cdus or slot * cdus + cdu >= racks:
        raise QueryError("entity", f"rack/{slot}/{cdu}: no such rack in run {run_id!r}")
    return slot * cdus + cdu + 1


async def _modelled(
    conn: psycopg.AsyncConnection, q: MeasuredQuery, target: _Target
) -> dict[int, float]:
    m = target.modelled
    if m is None:
        return {}
    start, end = _sim_window(q)
    params: list[object] = [EPOCH, q.bucket_s, q.run_id, start]
    value: sql.Composable = sql.Identifier(m.column)
    where = sql.SQL("")
    if m.table == "cdu_series":
        where = sql.SQL(" AND cdu = %s")
        params.append(target.index[0])
    elif m.table == "rack_arrays":
        element = await _rack_element(conn, q.run_id, target.index)
        value = sql.SQL('"values"[{}]').format(sql.Literal(element))
        where = sql.SQL(" AND quantity = %s")
        params.append(m.column)
    if end is not None:
        where = sql.SQL("{} AND time < %s").format(where)
        params.append(end)
    statement = sql.SQL(
        "SELECT floor(extract(epoch FROM time - %s)::float8 / %s) AS b, avg({value})"
        " FROM {table} WHERE run_id = %s AND time >= %s{where}"
        " GROUP BY b ORDER BY b LIMIT {limit}"
    ).format(
        value=value, table=sql.Identifier(m.table), where=where, limit=sql.Literal(MAX_BUCKETS + 1)
    )
    cur = await conn.execute(statement, params)
    return {int(b): float(v) for b, v in await cur.fetchall() if v is not None}


async def query_measured(conn: psycopg.AsyncConnection, q: MeasuredQuery) -> MeasuredSeries:
    """Both series on the union of their buckets (NaN where a side has none). Raises
    ``QueryError`` (bucket_s) beyond ``MAX_BUCKETS`` buckets, ``RunNotFound`` for an
    unknown run."""
    target = resolve(q)
    run = await _run(conn, q.run_id, q.site_id)
    measured = await _measured(conn, q, run, target.quantity)
    modelled = await _modelled(conn, q, target)
    buckets = sorted(set(measured) | set(modelled))
    if max(len(measured), len(modelled), len(buckets)) > MAX_BUCKETS:
        raise QueryError("bucket_s", f"more than {MAX_BUCKETS} buckets: choose a wider bucket")
    rows = [(b * q.bucket_s, measured.get(b, math.nan), modelled.get(b, math.nan)) for b in buckets]
    name = f"{target.modelled.table}.{target.modelled.column}" if target.modelled else ""
    return MeasuredSeries(q.entity, target.quantity, name, rows)
