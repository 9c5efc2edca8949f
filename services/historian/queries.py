"""The SQL behind the History API (``twin.history.v1.HistoryService``), on PostgreSQL.

Only parameterised SQL: metric names are checked against ``METRICS`` (the value columns of
``site_series``) and then composed with ``psycopg.sql.Identifier``; every value travels as a
query parameter. Buckets use ``date_bin`` with the writer's epoch (2000-01-01T00:00Z) as
origin, so a bucket of width ``w`` starts at a multiple of ``w`` simulated seconds, the same
boundaries as the rollup tables; percentiles use ``percentile_cont`` (linear interpolation,
as numpy's default). ``LAST`` is the value at the latest time in the bucket.

Rollups: a bucketed query whose width is a whole number of hours (or minutes), whose window
(if any) starts and ends on that rollup's boundaries and whose aggregate is avg, min, max,
sum or last reads ``site_series_1h`` (or ``_1m``) instead of the raw rows: avg is
``sum(<col>_sum) / sum(<col>_count)`` over the rollup buckets (not an average of averages;
NULL samples do not count), sum adds the sums, min/max take the extremes, last takes the
``_last`` of the latest rollup bucket. Anything else (percentiles, odd widths or windows,
metrics without a rollup column) reads the raw rows. The historian keeps the rollups current
for every batch it commits, so both paths give the same answer (up to float rounding of avg
and sum: the additions happen in another order).

Paging is by key, not offset: a page token carries the first time (µs since the epoch) the
next page starts at and a hash of the request, so a token is refused with another query.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import LiteralString

import psycopg
from psycopg import sql

from services.historian.schema import EPOCH, METRICS, ROLLUP_METRICS
from twin_core.inputs import clip

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
AGGREGATES = ("avg", "min", "max", "last", "sum", "percentile")
# (table, bucket width in s), widest first: a query reads the widest that fits.
ROLLUPS: tuple[tuple[str, int], ...] = (("site_series_1h", 3600), ("site_series_1m", 60))
ROLLUP_AGGREGATES = ("avg", "min", "max", "sum", "last")


class QueryError(ValueError):
    """A bad request: ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RunNotFound(LookupError):
    pass


@dataclass(frozen=True)
class SeriesQuery:
    run_id: str
    metrics: Sequence[str]
    start_s: float | None = None
    end_s: float | None = None
    bucket_s: float = 0.0
    aggregate: str = "avg"
    percentile: float = 0.0
    page_size: int = 0
    page_token: str = ""
    site_id: str = ""
    use_rollups: bool = True  # False forces the raw rows (tests compare both paths)


@dataclass(frozen=True)
class Page:
    metrics: list[str]
    rows: list[tuple[float, list[float]]]
    next_page_token: str


# ------------------------------------------------------------------------------ checks


def check_page_size(page_size: int) -> int:
    if page_size < 0:
        raise QueryError("page_size", "must be >= 0")
    if page_size > MAX_PAGE_SIZE:
        raise QueryError("page_size", f"at most {MAX_PAGE_SIZE}")
    return page_size or DEFAULT_PAGE_SIZE


MAX_METRICS = 64  # per request; the schema has fewer, so more means repeats
MAX_ID_CHARS = 128
MAX_TIME_S = 1e11  # ~3,000 years of run time: beyond it a timestamp overflows
MAX_TOKEN_OFFSET = 2**62  # page tokens carry a bigint offset


def check_id(field: str, value: str) -> None:
    """A run or site id: at most 128 printable characters (PostgreSQL text has no NUL)."""
    if len(value) > MAX_ID_CHARS:
        raise QueryError(field, f"at most {MAX_ID_CHARS} characters, got {len(value)}")
    if not value.isprintable():
        raise QueryError(field, f"{clip(value)!r} holds control characters")


def check_metrics(metrics: Sequence[str], required: bool = True) -> None:
    if required and not metrics:
        raise QueryError("metrics", "at least one metric is required")
    if len(metrics) > MAX_METRICS:
        raise QueryError("metrics", f"at most {MAX_METRICS} metrics, got {len(metrics)}")
    for i, name in enumerate(metrics):
        if name not in METRICS:
            raise QueryError(
                f"metrics.{i}", f"unknown metric {clip(name)!r} (known: {', '.join(METRICS)})"
            )


def check_window(start_s: float | None, end_s: float | None) -> None:
    for field, value in (("start_s", start_s), ("end_s", end_s)):
        if value is not None and not math.isfinite(value):
            raise QueryError(field, "must be finite")
        if value is not None and abs(value) > MAX_TIME_S:
            raise QueryError(field, f"must be within +-{MAX_TIME_S:g} s")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise QueryError("end_s", "must be greater than start_s")


def check_bucket(bucket_s: float) -> None:
    if not math.isfinite(bucket_s):
        raise QueryError("bucket_s", "must be finite")
    if bucket_s < 0:
        raise QueryError("bucket_s", "must be >= 0")
    if bucket_s > 0 and bucket_s < 1e-6:
        raise QueryError("bucket_s", "must be at least 1 microsecond")
    if bucket_s > MAX_TIME_S:
        raise QueryError("bucket_s", f"at most {MAX_TIME_S:g} s")


def validate(q: SeriesQuery) -> None:
    """Raise ``QueryError`` naming the first bad field of ``q``."""
    if not q.run_id:
        raise QueryError("run_id", "required")
    check_id("run_id", q.run_id)
    check_id("site_id", q.site_id)
    check_metrics(q.metrics)
    check_window(q.start_s, q.end_s)
    check_bucket(q.bucket_s)
    if q.aggregate not in AGGREGATES:
        raise QueryError("aggregate", f"unknown aggregate {q.aggregate!r}")
    if q.aggregate == "percentile" and not (0 < q.percentile < 100):
        raise QueryError("percentile", "must be in (0, 100)")
    check_page_size(q.page_size)


# ------------------------------------------------------------------------- page tokens


def _fingerprint(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def encode_token(after: int, fingerprint: str) -> str:
    raw = json.dumps({"a": after, "h": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, fingerprint: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after, digest = data["a"], data["h"]
        if not isinstance(after, int) or isinstance(after, bool):
            raise ValueError(after)
        if not 0 <= after < MAX_TOKEN_OFFSET:
            raise ValueError(after)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise QueryError("page_token", "invalid page token") from exc
    if digest != fingerprint:
        raise QueryError("page_token", "does not match the request")
    return after


# ------------------------------------------------------------------------------ queries


def _time(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def _seconds(t: datetime) -> float:
    return (t - EPOCH).total_seconds()


def _micros(t: datetime) -> int:
    delta = t - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


async def find_run(
    conn: psycopg.AsyncConnection, run_id: str, site_id: str = "", field: str = "run_id"
) -> None:
    """Raise ``RunNotFound`` (its message starting with ``field``) unless ``run_id`` has a
    runs row (of ``site_id`` when given) or, with no site, stored series."""
    cur = await conn.execute("SELECT site_id FROM runs WHERE run_id = %s", (run_id,))
    row = await cur.fetchone()
    if row is not None:
        if site_id and row[0] != site_id:
            raise RunNotFound(f"{field}: run {run_id!r} not found in site {site_id!r}")
        return
    if not site_id:
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM site_series WHERE run_id = %s)", (run_id,)
        )
        row = await cur.fetchone()
        assert row is not None  # SELECT EXISTS returns one row
        if row[0]:
            return
    raise RunNotFound(f"{field}: run {run_id!r} not found")


def _aggregate(q: SeriesQuery, column: str) -> tuple[sql.Composable, list[object]]:
    col = sql.Identifier(column)
    if q.aggregate == "last":
        return sql.SQL("(array_agg({} ORDER BY time DESC))[1]").format(col), []
    if q.aggregate == "percentile":
        return (
            sql.SQL("percentile_cont(%s::float8) WITHIN GROUP (ORDER BY {})").format(col),
            [q.percentile / 100.0],
        )
    funcs: dict[str, LiteralString] = {"avg": "avg", "min": "min", "max": "max", "sum": "sum"}
    func = funcs[q.aggregate]
    return sql.SQL("{}({})::float8").format(sql.SQL(func), col), []


def _aligned(seconds: float | None, width: int) -> bool:
    return seconds is None or math.fmod(seconds, width) == 0


def rollup_for(q: SeriesQuery) -> tuple[str, int] | None:
    """The rollup table (and its width, s) that answers ``q`` exactly, or None: raw rows."""
    if not q.use_rollups or q.bucket_s <= 0 or q.aggregate not in ROLLUP_AGGREGATES:
        return None
    if any(m not in ROLLUP_METRICS for m in q.metrics):
        return None
    for table, width in ROLLUPS:
        # Whole rollup buckets only: a query bucket, and the window, made of them.
        if (
            math.fmod(q.bucket_s, width) == 0
            and _aligned(q.start_s, width)
            and _aligned(q.end_s, width)
        ):
            return table, width
    return None


def _rollup_aggregate(aggregate: str, column: str) -> sql.Composable:
    def c(suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{column}_{suffix}")

    if aggregate == "avg":  # weighted by each bucket's non-NULL samples
        return sql.SQL("(sum({}) / nullif(sum({}), 0))::float8").format(c("sum"), c("count"))
    if aggregate == "last":
        return sql.SQL("(array_agg({} ORDER BY bucket DESC))[1]").format(c("last"))
    # The function is named as its column suffix: the lookup also checks the aggregate.
    suffixes: dict[str, LiteralString] = {"min": "min", "max": "max", "sum": "sum"}
    suffix = suffixes[aggregate]
    return sql.SQL("{}({})::float8").format(sql.SQL(suffix), c(suffix))


def series_statement(
    q: SeriesQuery, after_us: int | None, limit: int
) -> tuple[sql.Composed, list[object]]:
    """The SELECT (and its parameters) of one page of a validated ``q``: rows of (time,
    value per metric) in time order, at most ``limit``. Plain SQL on both backends."""
    rollup = rollup_for(q)
    time_col = "bucket" if rollup else "time"
    where: list[sql.Composable] = [sql.SQL("run_id = %s")]
    where_params: list[object] = [q.run_id]
    bounds: list[tuple[LiteralString, datetime]] = []
    if q.start_s is not None:
        bounds.append((">=", _time(q.start_s)))
    if q.end_s is not None:
        bounds.append(("<", _time(q.end_s)))
    if after_us is not None:  # keyset: the next page starts at this time (µs since epoch)
        bounds.append((">=", EPOCH + timedelta(microseconds=after_us)))
    for op, value in bounds:
        where.append(sql.SQL("{} {} %s").format(sql.Identifier(time_col), sql.SQL(op)))
        where_params.append(value)
    condition = sql.SQL(" AND ").join(where)
    metrics = list(q.metrics)
    if q.bucket_s == 0:
        select = sql.SQL(", ").join(sql.Identifier(m) for m in metrics)
        statement = sql.SQL(
            "SELECT time, {select} FROM site_series WHERE {where} ORDER BY time LIMIT %s"
        ).format(select=select, where=condition)
        return statement, [*where_params, limit]
    width = timedelta(seconds=q.bucket_s)
    if rollup:
        parts = [_rollup_aggregate(q.aggregate, m) for m in metrics]
        statement = sql.SQL(
            "SELECT date_bin(%s, bucket, %s) AS qbucket, {select} FROM {table}"
            " WHERE {where} GROUP BY qbucket ORDER BY qbucket LIMIT %s"
        ).format(select=sql.SQL(", ").join(parts), table=sql.Identifier(rollup[0]), where=condition)
        return statement, [width, EPOCH, *where_params, limit]
    parts, agg_params = [], []
    for m in metrics:
        expr, p = _aggregate(q, m)
        parts.append(expr)
        agg_params += p
    statement = sql.SQL(
        "SELECT date_bin(%s, time, %s) AS bucket, {select} FROM site_series"
        " WHERE {where} GROUP BY bucket ORDER BY bucket LIMIT %s"
    ).format(select=sql.SQL(", ").join(parts), where=condition)
    return statement, [width, EPOCH, *agg_params, *where_params, limit]


async def query_series(conn: psycopg.AsyncConnection, q: SeriesQuery) -> Page:
    """One page of ``q`` (validated here too). Raises ``QueryError``, ``RunNotFound``."""
    validate(q)
    page_size = check_page_size(q.page_size)
    metrics = list(q.metrics)
    fingerprint = _fingerprint(
        [q.site_id, q.run_id, metrics, q.start_s, q.end_s, q.bucket_s, q.aggregate]
        + ([q.percentile] if q.aggregate == "percentile" else [])
    )
    after = decode_token(q.page_token, fingerprint) if q.page_token else None
    await find_run(conn, q.run_id, q.site_id)

    statement, params = series_statement(q, after, page_size + 1)
    cur = await conn.execute(statement, params)
    records = await cur.fetchall()
    token = ""
    if len(records) > page_size:
        records = records[:page_size]
        last = records[-1][0]
        if q.bucket_s == 0:
            next_start = _micros(last) + 1  # times are unique per run (fixed by step)
        else:
            next_start = _micros(last + timedelta(seconds=q.bucket_s))
        token = encode_token(next_start, fingerprint)
    rows = [(_seconds(r[0]), [math.nan if v is None else float(v) for v in r[1:]]) for r in records]
    return Page(metrics, rows, token)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    site_id: str
    scenario: str
    started_at: datetime
    dt_s: float
    horizon_s: float
    status: str
    steps_stored: int


async def list_runs(
    conn: psycopg.AsyncConnection, site_id: str = "", page_size: int = 0, page_token: str = ""
) -> tuple[list[RunInfo], str]:
    """Runs, most recent first (then by run_id); the token is an offset."""
    size = check_page_size(page_size)
    fingerprint = _fingerprint(["runs", site_id])
    offset = decode_token(page_token, fingerprint) if page_token else 0
    cur = await conn.execute(
        "SELECT r.run_id, r.site_id, r.scenario, r.started_at, r.dt_s, r.horizon_s, r.status,"
        " (SELECT count(*) FROM site_series s WHERE s.run_id = r.run_id)"
        " FROM runs r WHERE (%s = '' OR r.site_id = %s)"
        " ORDER BY r.started_at DESC, r.run_id LIMIT %s OFFSET %s",
        (site_id, site_id, size + 1, offset),
    )
    records = await cur.fetchall()
    token = encode_token(offset + size, fingerprint) if len(records) > size else ""
    return [RunInfo(*r) for r in records[:size]], token


# ------------------------------------------------------------------------ compare runs

COMPARE_METRICS = ("facility_w", "it_w", "cooling_w", "pue", "gpu_temp_max_c", "cost_usd_per_s")
MAX_COMPARE_BUCKETS = 10_000


@dataclass(frozen=True)
class Summary:
    """One metric of one run over a window; ``energy_mwh`` for power metrics only."""

    metric: str
    samples: int
    avg: float
    min: float
    max: float
    energy_mwh: float | None


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    dt_s: float
    steps: int
    metrics: list[Summary]


def _window(start_s: float | None, end_s: float | None) -> tuple[sql.Composable, list[object]]:
    where, params = [sql.SQL("run_id = %s")], []
    if start_s is not None:
        where.append(sql.SQL("time >= %s"))
        params.append(_time(start_s))
    if end_s is not None:
        where.append(sql.SQL("time < %s"))
        params.append(_time(end_s))
    return sql.SQL(" AND ").join(where), params


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


async def summarize(
    conn: psycopg.AsyncConnection,
    run_id: str,
    metrics: Sequence[str],
    start_s: float | None = None,
    end_s: float | None = None,
) -> RunSummary:
    """Per-metric count/avg/min/max (and energy = sum x dt for ``*_w``) of one stored run."""
    cur = await conn.execute("SELECT dt_s FROM runs WHERE run_id = %s", (run_id,))
    row = await cur.fetchone()
    dt_s = float(row[0]) if row and row[0] else 1.0  # no runs row: the writer's default
    condition, params = _window(start_s, end_s)
    parts = [
        sql.SQL(
            "count({c}), avg({c})::float8, min({c})::float8, max({c})::float8, sum({c})::float8"
        ).format(c=sql.Identifier(m))
        for m in metrics
    ]
    statement = sql.SQL("SELECT count(*), {} FROM site_series WHERE {}").format(
        sql.SQL(", ").join(parts), condition
    )
    cur = await conn.execute(statement, [run_id, *params])
    values = await cur.fetchone()
    assert values is not None  # an aggregate SELECT without GROUP BY returns one row
    summaries = []
    for i, m in enumerate(metrics):
        n, avg, lo, hi, total = values[1 + 5 * i : 6 + 5 * i]
        energy = None
        if m.endswith("_w"):  # W x s -> MWh
            energy = (total or 0.0) * dt_s / 3.6e9
        summaries.append(Summary(m, int(n), _float(avg), _float(lo), _float(hi), energy))
    return RunSummary(run_id, dt_s, int(values[0]), summaries)


async def compare_series(
    conn: psycopg.AsyncConnection,
    run_a: str,
    run_b: str,
    metrics: Sequence[str],
    bucket_s: float,
    start_s: float | None = None,
    end_s: float | None = None,
) -> list[tuple[float, list[float], list[float]]]:
    """Both runs' bucket averages on the union of their buckets (NaN where a run has
    none). Raises ``QueryError`` (bucket_s) beyond ``MAX_COMPARE_BUCKETS`` buckets."""
    by_run = []
    for run_id in (run_a, run_b):
        q = SeriesQuery(run_id, list(metrics), start_s, end_s, bucket_s, "avg")
        statement, params = series_statement(q, None, MAX_COMPARE_BUCKETS + 1)
        cur = await conn.execute(statement, params)
        records = await cur.fetchall()
        if len(records) > MAX_COMPARE_BUCKETS:
            raise QueryError(
                "bucket_s", f"more than {MAX_COMPARE_BUCKETS} buckets: choose a wider bucket"
            )
        by_run.append({_seconds(r[0]): [_float(v) for v in r[1:]] for r in records})
    missing = [math.nan] * len(metrics)
    times = sorted(set(by_run[0]) | set(by_run[1]))
    return [(t, by_run[0].get(t, missing), by_run[1].get(t, missing)) for t in times]


# ------------------------------------------------------------------------------ export

EXPORT_PAGE_ROWS = 50_000  # rows per read (and per Parquet row group)


async def export_pages(
    conn: psycopg.AsyncConnection,
    run_id: str,
    metrics: Sequence[str],
    start_s: float | None = None,
    end_s: float | None = None,
    page_rows: int = EXPORT_PAGE_ROWS,
):
    """Pages of ``(time_s, step, value, ...)`` rows in time order (None where no value),
    read by key so memory stays at one page whatever the run's length."""
    condition, params = _window(start_s, end_s)
    columns = sql.SQL(", ").join(sql.Identifier(m) for m in metrics)
    after: datetime | None = None
    while True:
        where = condition if after is None else sql.SQL("{} AND time > %s").format(condition)
        statement = sql.SQL(
            "SELECT time, step, {} FROM site_series WHERE {} ORDER BY time LIMIT %s"
        ).format(columns, where)
        extra = [] if after is None else [after]
        cur = await conn.execute(statement, [run_id, *params, *extra, page_rows])
        records = await cur.fetchall()
        if not records:
            return
        yield [(_seconds(r[0]), *r[1:]) for r in records]
        if len(records) < page_rows:
            return
        after = records[-1][0]
