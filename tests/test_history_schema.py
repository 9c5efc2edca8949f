"""The history schema (services/historian/migrations) on real databases: PostgreSQL 16
(pgserver) and TimescaleDB 2.23 (PGlite in Node, tests/pglite_server.mjs)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.abc import QueryNoTemplate
from typer.testing import CliRunner

from services.cli.main import app
from services.historian.migrate import (
    MIGRATIONS,
    MigrationError,
    discover,
    migrate,
    split_statements,
)

TABLES = {
    "runs",
    "site_series",
    "cdu_series",
    "rack_arrays",
    "events",
    "measurements",
    "studies",
    "calibrations",  # 0009: fits stored with the run they were fitted on
    "schema_migrations",
}
SERIES = {"site_series", "cdu_series", "rack_arrays"}
ROLLUPS = {"site_series_1m", "site_series_1h"}
MEASURED = {"measurements"}  # a hypertable, not compressed (0008)
MEASURED_ROLLUPS = {"measurements_1m"}
VERSIONS = [v.version for v in discover(MIGRATIONS, "plain")]
START = datetime(2025, 7, 1, tzinfo=UTC)
STEP_S = 30
STEPS = 300  # 2.5 h at 30 s: three hourly buckets, the last one partial


@pytest.fixture(scope="module")
def pg(postgres_url):
    """(url, versions applied by the first run, by the second run)."""
    return postgres_url, migrate(postgres_url), migrate(postgres_url)


@pytest.fixture(scope="module")
def ts(timescale_url):
    return timescale_url, migrate(timescale_url), migrate(timescale_url)


def tables(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def insert_rows(url: str, run_id: str) -> None:
    """The same run on any backend: one parameterized INSERT per row (no COPY, no
    pipeline: the PGlite socket server serves neither)."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s, spec)"
            " VALUES (%s, 'small', 'test', %s, 1.0, %s, '{\"horizon_s\": 9000}')"
            " ON CONFLICT DO NOTHING",
            (run_id, START, STEPS * STEP_S),
        )
        conn.execute("BEGIN")
        for step in range(STEPS):
            conn.execute(
                "INSERT INTO site_series (run_id, step, time, it_w, facility_w, pue,"
                " gpu_temp_max_c, throttled_gpus, soc)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (run_id, step, time) DO NOTHING",
                (
                    run_id,
                    step,
                    START + timedelta(seconds=STEP_S * step),
                    1.0e6 + 512.0 * (step % 7),  # exact in binary: sums are exact
                    1.25e6 + 256.0 * (step % 5),
                    1.25,
                    60.0 + 0.5 * (step % 11),
                    step % 3,
                    0.5 + 0.125 * (step % 4),
                ),
            )
        conn.execute("COMMIT")


HOURLY = """
SELECT {bucket} AS hour, count(*), avg(it_w), min(facility_w), max(gpu_temp_max_c),
       sum(throttled_gpus)
FROM site_series WHERE run_id = %s GROUP BY hour ORDER BY hour
"""
TS_BUCKET = "time_bucket(INTERVAL '1 hour', time)"
PLAIN_BUCKET = "date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
ROLLUP = sql.SQL("SELECT * FROM {table} WHERE run_id = %s ORDER BY bucket")


# prepare_threshold=None everywhere: the PGlite socket server shares one backend session
# between connections, so psycopg's automatic prepared statements ("_pg3_0", ...) of one
# connection collide with the next one's ("prepared statement ... already exists").


def query(url: str, statement: QueryNoTemplate, *params) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        return conn.execute(statement, params).fetchall()


def test_split_statements_respects_quotes_dollar_quotes_and_comments():
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x text DEFAULT 'it''s; fine');
    /* block; comment */
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $fn$;
    SELECT "odd;name" FROM a;  -- trailing
    -- only a comment
    """
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[0].endswith("'it''s; fine')")
    assert statements[1].endswith("$fn$ SELECT 1; $fn$")
    assert statements[2] == 'SELECT "odd;name" FROM a'


def test_every_version_has_a_file_for_some_backend():
    plain = discover(MIGRATIONS, "plain")
    timescale = discover(MIGRATIONS, "timescale")
    assert [m.version for m in plain] == [m.version for m in timescale] == VERSIONS
    # Increasing and unique (gaps would be allowed).
    assert VERSIONS[0] == 1 and sorted(set(VERSIONS)) == VERSIONS
    assert all(m.path is not None for m in timescale)


def test_postgres_migrates_once(pg):
    url, first, second = pg
    assert first == VERSIONS
    assert second == []
    assert tables(url) >= TABLES | ROLLUPS
    rows = query(url, "SELECT version, backend FROM schema_migrations ORDER BY version")
    assert rows == [(v, "plain") for v in VERSIONS]


def test_postgres_failed_migration_names_the_file_and_rolls_back(pg, tmp_path):
    url, _, _ = pg
    for path in MIGRATIONS.glob("*.sql"):
        shutil.copy(path, tmp_path)
    broken = tmp_path / f"{len(VERSIONS) + 1:04d}_broken.sql"
    broken.write_text("CREATE TABLE half_done (x int);\nSELECT no_such_column FROM runs;\n")
    with pytest.raises(MigrationError) as info:
        migrate(url, tmp_path)
    message = str(info.value)
    assert broken.name in message
    assert "SELECT no_such_column FROM runs" in message
    assert "no_such_column" in message.split(":", 1)[1]
    assert "half_done" not in tables(url)  # the whole file rolled back
    assert query(url, "SELECT max(version) FROM schema_migrations") == [(VERSIONS[-1],)]


def test_cli_db_migrate(pg, monkeypatch):
    url, _, _ = pg
    runner = CliRunner()
    monkeypatch.setenv("TWIN_DATABASE_URL", url)
    result = runner.invoke(app, ["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    monkeypatch.delenv("TWIN_DATABASE_URL")
    bad = "host=127.0.0.1 port=1 dbname=x connect_timeout=2"
    result = runner.invoke(app, ["db", "migrate", "--url", bad])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect"), result.output
    result = runner.invoke(app, ["db", "migrate"])
    assert result.exit_code == 2
    assert "TWIN_DATABASE_URL" in result.output


@pytest.mark.slow
def test_timescale_migrates_once(ts):
    url, first, second = ts
    assert first == VERSIONS
    assert second == []
    assert tables(url) >= TABLES
    hypertables = query(url, "SELECT hypertable_name FROM timescaledb_information.hypertables")
    assert {name for (name,) in hypertables} == SERIES | MEASURED
    caggs = query(
        url,
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates",
    )
    assert set(caggs) == {(name, True) for name in ROLLUPS | MEASURED_ROLLUPS}
    compressed = query(
        url,
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE compression_enabled",
    )
    assert {name for (name,) in compressed} == SERIES
    jobs = query(
        url,
        "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs WHERE job_id >= 1000",
    )
    procs = {(proc, table) for proc, table in jobs}
    assert {("policy_compression", t) for t in SERIES} <= procs
    # no retention: it would drop every run (series are stamped from 2000-01-01)
    assert not {proc for proc, _ in procs if proc == "policy_retention"}
    assert sum(proc == "policy_refresh_continuous_aggregate" for proc, _ in procs) == 3
    rows = query(url, "SELECT version, backend FROM schema_migrations ORDER BY version")
    assert rows == [(v, "timescale") for v in VERSIONS]


@pytest.mark.slow
def test_same_rows_same_answers_on_both_backends(pg, ts):
    (pg_url, _, _), (ts_url, _, _) = pg, ts
    for url in (pg_url, ts_url):
        insert_rows(url, "r1")
        insert_rows(url, "r1")  # a redelivery changes nothing
    # Other test modules may share the session's databases: count this run only.
    count = "SELECT count(*) FROM site_series WHERE run_id = 'r1'"
    assert query(pg_url, count) == [(STEPS,)]
    assert query(ts_url, count) == [(STEPS,)]

    # The same hourly question asked of the raw rows.
    ts_hourly = query(ts_url, HOURLY.format(bucket=TS_BUCKET), "r1")
    pg_hourly = query(pg_url, HOURLY.format(bucket=PLAIN_BUCKET), "r1")
    assert len(ts_hourly) == 3
    assert ts_hourly == pg_hourly
    assert sum(row[1] for row in ts_hourly) == STEPS

    # The rollups: refresh_continuous_aggregate (outside a transaction) vs the plain
    # historian's refresh_site_rollups, then the same SELECT on both.
    end = START + timedelta(seconds=STEP_S * STEPS)
    assert query(ts_url, ROLLUP.format(table=sql.Identifier("site_series_1h")), "r1") == []
    with psycopg.connect(ts_url, autocommit=True, prepare_threshold=None) as conn:
        for table in sorted(ROLLUPS):
            conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
                (table, START, end + timedelta(hours=1)),
            )
    query(pg_url, "SELECT refresh_site_rollups(%s, %s, %s)", "r1", START, end)
    for table in sorted(ROLLUPS):
        ts_rollup = query(ts_url, ROLLUP.format(table=sql.Identifier(table)), "r1")
        pg_rollup = query(pg_url, ROLLUP.format(table=sql.Identifier(table)), "r1")
        assert ts_rollup, table
        assert ts_rollup == pg_rollup, table
    hours = query(
        ts_url,
        "SELECT bucket, samples, it_w_last FROM site_series_1h WHERE run_id = 'r1' ORDER BY bucket",
    )
    assert [samples for _, samples, _ in hours] == [120, 120, 60]
    last = query(
        ts_url, "SELECT it_w FROM site_series WHERE run_id = 'r1' AND step = %s", STEPS - 1
    )
    assert hours[-1][2] == last[0][0]
