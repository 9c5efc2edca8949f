"""The SQL behind the History API (``twin.history.v1.HistoryService``), on PostgreSQL.

Only parameterised SQL: metric names are checked against ``METRICS`` (the value columns of
``site_series``) and then composed with ``psycopg.sql.Identifier``; every value travels as a
query parameter. Buckets use ``date_bin`` with the writer's epoch (2000-01-01T00:00Z) as
origin, so a bucket of width ``w`` starts at a multiple of ``w`` simulated seconds, the same
boundaries as the rollup tables; percentiles use ``percentile_cont`` (linear interpolation,
as numpy's default). ``LAST`` is the value at the latest time in the bucket.

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

import psycopg
from psycopg import sql

from services.historian.writer import EPOCH, SITE_COLUMNS

METRICS: tuple[str, ...] = tuple(SITE_COLUMNS[3:])  # after run_id, step, time
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
AGGREGATES = ("avg", "min", "max", "last", "sum", "percentile")


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


def validate(q: SeriesQuery) -> None:
    """Raise ``QueryError`` naming the first bad field of ``q``."""
    if not q.run_id:
        raise QueryError("run_id", "required")
    if not q.metrics:
        raise QueryError("metrics", "at least one metric is required")
    for i, name in enumerate(q.metrics):
        if name not in METRICS:
            raise QueryError(
                f"metrics.{i}", f"unknown metric {name!r} (known: {', '.join(METRICS)})"
            )
    for field in ("start_s", "end_s"):
        value = getattr(q, field)
        if value is not None and not math.isfinite(value):
            raise QueryError(field, "must be finite")
    if q.start_s is not None and q.end_s is not None and q.end_s <= q.start_s:
        raise QueryError("end_s", "must be greater than start_s")
    if not math.isfinite(q.bucket_s):
        raise QueryError("bucket_s", "must be finite")
    if q.bucket_s < 0:
        raise QueryError("bucket_s", "must be >= 0")
    if q.bucket_s > 0 and q.bucket_s < 1e-6:
        raise QueryError("bucket_s", "must be at least 1 microsecond")
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
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ValueError(after)
    except (ValueError, KeyError, TypeError) as exc:
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


async def find_run(conn: psycopg.AsyncConnection, run_id: str, site_id: str = "") -> None:
    """Raise ``RunNotFound`` unless ``run_id`` has a runs row (of ``site_id`` when given)
    or, with no site, stored series."""
    cur = await conn.execute("SELECT site_id FROM runs WHERE run_id = %s", (run_id,))
    row = await cur.fetchone()
    if row is not None:
        if site_id and row[0] != site_id:
            raise RunNotFound(f"run_id: run {run_id!r} not found in site {site_id!r}")
        return
    if not site_id:
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM site_series WHERE run_id = %s)", (run_id,)
        )
        if (await cur.fetchone())[0]:
            return
    raise RunNotFound(f"run_id: run {run_id!r} not found")


def _aggregate(q: SeriesQuery, column: str) -> tuple[sql.Composable, list[object]]:
    col = sql.Identifier(column)
    if q.aggregate == "last":
        return sql.SQL("(array_agg({} ORDER BY time DESC))[1]").format(col), []
    if q.aggregate == "percentile":
        return (
            sql.SQL("percentile_cont(%s::float8) WITHIN GROUP (ORDER BY {})").format(col),
            [q.percentile / 100.0],
        )
    func = {"avg": "avg", "min": "min", "max": "max", "sum": "sum"}[q.aggregate]
    return sql.SQL("{}({})::float8").format(sql.SQL(func), col), []


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

    where = [sql.SQL("run_id = %s")]
    where_params: list[object] = [q.run_id]
    if q.start_s is not None:
        where.append(sql.SQL("time >= %s"))
        where_params.append(_time(q.start_s))
    if q.end_s is not None:
        where.append(sql.SQL("time < %s"))
        where_params.append(_time(q.end_s))
    if after is not None:  # keyset: the next page starts at this time (µs since epoch)
        where.append(sql.SQL("time >= %s"))
        where_params.append(EPOCH + timedelta(microseconds=after))
    condition = sql.SQL(" AND ").join(where)

    if q.bucket_s == 0:
        select = sql.SQL(", ").join(sql.Identifier(m) for m in metrics)
        statement = sql.SQL(
            "SELECT time, {select} FROM site_series WHERE {where} ORDER BY time LIMIT %s"
        ).format(select=select, where=condition)
        params = [*where_params, page_size + 1]
    else:
        width = timedelta(seconds=q.bucket_s)
        parts, agg_params = [], []
        for m in metrics:
            expr, p = _aggregate(q, m)
            parts.append(expr)
            agg_params += p
        statement = sql.SQL(
            "SELECT date_bin(%s, time, %s) AS bucket, {select} FROM site_series"
            " WHERE {where} GROUP BY bucket ORDER BY bucket LIMIT %s"
        ).format(select=sql.SQL(", ").join(parts), where=condition)
        params = [width, EPOCH, *agg_params, *where_params, page_size + 1]

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
