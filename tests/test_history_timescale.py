"""The History API's SQL on TimescaleDB 2.23 (PGlite in Node, tests/pglite_server.mjs) and on
PostgreSQL 16 (pgserver): the same rows inserted on both, the rollups refreshed as the
historian refreshes them, then every query of services/historian/queries.py asked both of the
rollups and of the raw rows, on both backends: the same answers.

PGlite serves neither COPY nor pipelines, so the rows go in with multi-row INSERTs; the
historian's COPY path itself runs on PostgreSQL only (tests/test_historian.py)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import LiteralString

import numpy as np
import psycopg
import pytest

from services.historian.migrate import migrate
from services.historian.queries import ROLLUP_METRICS, SeriesQuery, rollup_for, series_statement
from services.historian.writer import EPOCH, rollup_refreshes

pytestmark = pytest.mark.slow  # PGlite takes ~30 s to start
RUN = "ts-run-1"
OTHER = "ts-run-2"  # a neighbour whose rows must not leak into RUN's answers
DT_S = 10
FIRST_S = 1800  # the first hour is partial
N = 1080  # 3 h at 10 s: buckets 0 h (half), 1 h, 2 h, 3 h (half)
METRICS = ("it_w", "facility_w", "pue", "soc")


def value_rows(run_id: str, scale: float) -> list[tuple]:
    rng = np.random.default_rng(11 if run_id == RUN else 12)
    it = 1.0e6 * scale * (1 + 0.1 * rng.standard_normal(N))
    facility = it * (1.2 + 0.05 * rng.random(N))
    rows = []
    for k in range(N):
        t = EPOCH + timedelta(seconds=FIRST_S + DT_S * k)
        # Partial steps: some samples have no facility meter (NULL), one hour of soc none.
        f = None if k % 7 == 3 else float(facility[k])
        pue = None if f is None else f / float(it[k])
        soc = None if 360 <= k < 720 else 0.5 + 0.001 * (k % 50)
        rows.append((run_id, k, t, float(it[k]), f, pue, soc))
    return rows


def insert(url: str) -> None:
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for run_id, scale in ((RUN, 1.0), (OTHER, 3.0)):
            conn.execute(
                "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s)"
                " VALUES (%s, 'small', 'small', %s, %s, %s) ON CONFLICT DO NOTHING",
                (run_id, EPOCH, DT_S, N * DT_S),
            )
            rows = value_rows(run_id, scale)
            for i in range(0, N, 120):  # multi-row INSERTs: PGlite has no COPY
                chunk = rows[i : i + 120]
                one_row: list[LiteralString] = ["(%s, %s, %s, %s, %s, %s, %s)"]
                values = ", ".join(one_row * len(chunk))
                conn.execute(
                    "INSERT INTO site_series (run_id, step, time, it_w, facility_w, pue, soc)"
                    f" VALUES {values} ON CONFLICT (run_id, step, time) DO NOTHING",
                    [v for row in chunk for v in row],
                )
            # Refreshed as the historian does, in two batches like two commits.
            for part in (rows[: N // 3], rows[N // 3 :]):
                spans = {run_id: (part[0][2], part[-1][2])}
                timescale = conn.execute(
                    "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
                ).fetchone()
                for statement, params in rollup_refreshes(timescale is not None, spans):
                    conn.execute(statement, params)


@pytest.fixture(scope="module")
def backends(postgres_url, timescale_url):
    for url in (postgres_url, timescale_url):
        migrate(url)
        insert(url)
    return {"postgres": postgres_url, "timescale": timescale_url}


def ask(url: str, q: SeriesQuery) -> list[tuple[float, list[float]]]:
    statement, params = series_statement(q, None, 10_000)
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        records = conn.execute(statement, params).fetchall()
    return [
        ((r[0] - EPOCH).total_seconds(), [math.nan if v is None else float(v) for v in r[1:]])
        for r in records
    ]


def same(a: list, b: list, exact: bool) -> None:
    assert [t for t, _ in a] == [t for t, _ in b]
    va, vb = np.array([v for _, v in a]), np.array([v for _, v in b])
    if exact:
        np.testing.assert_array_equal(va, vb)
    else:  # avg and sum add in another order over the rollup buckets
        np.testing.assert_allclose(va, vb, rtol=1e-12, equal_nan=True)


CASES = [
    (bucket, agg, window)
    for bucket in (60, 600, 3600, 7200, 86400)
    for agg in ("avg", "min", "max", "sum", "last")
    for window in (None, (3600, 3 * 3600), (1800, 12600))
]


def test_timescale_has_the_rollup_sums(backends):
    with psycopg.connect(backends["timescale"], autocommit=True, prepare_threshold=None) as c:
        caggs = c.execute(
            "SELECT view_name, materialized_only"
            " FROM timescaledb_information.continuous_aggregates ORDER BY view_name"
        ).fetchall()
        columns = {
            name
            for (name,) in c.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'site_series_1h'"
            ).fetchall()
        }
    # (measurements_1m: the measured history's rollup, migration 0008)
    assert caggs == [("measurements_1m", True), ("site_series_1h", True), ("site_series_1m", True)]
    assert {f"{m}_{k}" for m in ROLLUP_METRICS for k in ("sum", "count")} <= columns


@pytest.mark.parametrize(("bucket", "agg", "window"), CASES)
def test_rollups_answer_as_raw_rows_on_both_backends(backends, bucket, agg, window):
    start, end = window or (None, None)
    q = SeriesQuery(RUN, METRICS, start, end, float(bucket), agg)
    raw = SeriesQuery(RUN, METRICS, start, end, float(bucket), agg, use_rollups=False)
    hourly = bucket % 3600 == 0 and (window is None or window[0] % 3600 == 0)
    assert rollup_for(q) == (("site_series_1h", 3600) if hourly else ("site_series_1m", 60))
    exact = agg in ("min", "max", "last")
    answers = {name: (ask(url, q), ask(url, raw)) for name, url in backends.items()}
    pg_rollup, pg_raw = answers["postgres"]
    ts_rollup, ts_raw = answers["timescale"]
    assert pg_raw, "no rows"
    same(pg_rollup, pg_raw, exact)
    same(ts_rollup, ts_raw, exact)
    same(ts_raw, pg_raw, exact)
    same(ts_rollup, pg_rollup, exact)


def test_percentiles_and_odd_widths_read_raw_rows(backends):
    for q in (
        SeriesQuery(RUN, ["it_w"], bucket_s=3600, aggregate="percentile", percentile=95),
        SeriesQuery(RUN, ["it_w"], bucket_s=90),
        SeriesQuery(RUN, ["it_w"], start_s=30, bucket_s=3600),
        SeriesQuery(RUN, ["losses_w"], bucket_s=3600),  # no rollup column
    ):
        assert rollup_for(q) is None
        # Both read raw rows; a hypertable's chunks may add them in another order.
        exact = q.aggregate == "percentile"
        same(ask(backends["timescale"], q), ask(backends["postgres"], q), exact=exact)


def test_refresh_again_changes_nothing(backends):
    q = SeriesQuery(RUN, METRICS, bucket_s=3600)
    before = {name: ask(url, q) for name, url in backends.items()}
    insert(backends["postgres"])
    insert(backends["timescale"])  # the same rows again, refreshed again
    for name, url in backends.items():
        assert ask(url, q) == before[name]
