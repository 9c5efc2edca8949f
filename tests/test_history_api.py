"""The History API (twin.history.v1.HistoryService) against a real PostgreSQL 16: synthetic
site_series rows, the servicer on a grpc.aio server, a real gRPC client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import psycopg
import pytest
from served import served

from services.historian import queries
from services.historian.history_service import HistoryServicer
from services.historian.migrate import migrate
from services.historian.writer import EPOCH
from services.runtime.grpc_server import GrpcServer
from twin.history.v1 import history_pb2, history_pb2_grpc

RUN = "run-hist-1"
RUN_B = "run-hist-2"  # 1 h, 10 % more facility power: CompareRuns' other side
N = 2 * 3600  # 2 h at 1 s
STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def series() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    it = 50e6 + 5e6 * rng.standard_normal(N)
    facility = it * 1.2 + 1e6 * rng.random(N)
    return facility, it


@pytest.fixture(scope="module")
def database(postgres_url):
    migrate(postgres_url)
    facility, it = series()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("DELETE FROM site_series WHERE run_id = %s", (RUN,))
        conn.execute("DELETE FROM runs WHERE run_id = %s", (RUN,))
        conn.execute(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s)"
            " VALUES (%s, 'fairwater-wi', 'fairwater-wi', %s, 1.0, 7200)",
            (RUN, STARTED),
        )
        with (
            conn.cursor() as cur,
            cur.copy("COPY site_series (run_id, step, time, facility_w, it_w) FROM STDIN") as cp,
        ):
            for k in range(N):
                cp.write_row(
                    (RUN, k, EPOCH + timedelta(seconds=k), float(facility[k]), float(it[k]))
                )
        conn.execute("DELETE FROM site_series WHERE run_id = %s", (RUN_B,))
        conn.execute("DELETE FROM runs WHERE run_id = %s", (RUN_B,))
        conn.execute(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s)"
            " VALUES (%s, 'fairwater-wi', 'fairwater-wi', %s, 1.0, 3600)",
            (RUN_B, STARTED),
        )
        with (
            conn.cursor() as cur,
            cur.copy("COPY site_series (run_id, step, time, facility_w, it_w) FROM STDIN") as cp,
        ):
            for k in range(3600):
                t = EPOCH + timedelta(seconds=k)
                cp.write_row((RUN_B, k, t, 1.1 * float(facility[k]), float(it[k])))
        conn.execute(
            "SELECT refresh_site_rollups(%s, %s, %s)",
            (RUN_B, EPOCH, EPOCH + timedelta(seconds=3600)),
        )
        # Rows written behind the historian's back: bring the rollups up to date as it would.
        conn.execute(
            "SELECT refresh_site_rollups(%s, %s, %s)", (RUN, EPOCH, EPOCH + timedelta(seconds=N))
        )
    return postgres_url


@pytest.fixture
def call(database):
    """Run ``fn(stub)`` against a fresh server on a free port."""

    def run(fn):
        async def main():
            server = GrpcServer("127.0.0.1:0")
            server.add_servicer(
                history_pb2_grpc.add_HistoryServiceServicer_to_server,
                HistoryServicer(database, export_page_rows=1000),  # several row groups
            )
            port = await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    return await fn(history_pb2_grpc.HistoryServiceStub(channel))
            finally:
                await server.stop(0.5)

        return asyncio.run(main())

    return run


def query(call, **fields) -> history_pb2.QueryResponse:
    fields.setdefault("run_id", RUN)
    return call(lambda stub: stub.Query(history_pb2.QueryRequest(**fields), timeout=20))


AGG = history_pb2


@pytest.mark.parametrize(
    ("aggregate", "reduce", "extra"),
    [
        (AGG.AGGREGATE_AVG, np.mean, {}),
        (AGG.AGGREGATE_MAX, np.max, {}),
        (AGG.AGGREGATE_MIN, np.min, {}),
        (AGG.AGGREGATE_SUM, np.sum, {}),
        (AGG.AGGREGATE_LAST, lambda a, axis: a[:, -1], {}),
        (
            AGG.AGGREGATE_PERCENTILE,
            lambda a, axis: np.percentile(a, 95, axis=axis),
            {"percentile": 95},
        ),
    ],
)
def test_hourly_aggregates_match_numpy(call, aggregate, reduce, extra):
    facility, it = series()
    reply = query(call, metrics=["facility_w", "it_w"], bucket_s=3600, aggregate=aggregate, **extra)
    assert list(reply.metrics) == ["facility_w", "it_w"]
    assert [r.time_s for r in reply.rows] == [0.0, 3600.0]
    assert reply.next_page_token == ""
    got = np.array([list(r.values) for r in reply.rows])
    want = np.stack(
        [reduce(facility.reshape(2, 3600), axis=1), reduce(it.reshape(2, 3600), axis=1)], axis=1
    )
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("bucket_s", [60, 600, 3600, 7200])
@pytest.mark.parametrize("aggregate", ["avg", "min", "max", "sum", "last"])
def test_rollups_answer_as_the_raw_rows(database, bucket_s, aggregate):
    async def ask(use_rollups: bool, **window) -> queries.Page:
        q = queries.SeriesQuery(
            RUN,
            ["facility_w", "it_w", "pue"],
            bucket_s=bucket_s,
            aggregate=aggregate,
            use_rollups=use_rollups,
            **window,
        )
        assert (queries.rollup_for(q) is not None) == use_rollups
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            return await queries.query_series(conn, q)

    for window in ({}, {"start_s": 600.0, "end_s": 6600.0}):
        rollup, raw = asyncio.run(ask(True, **window)), asyncio.run(ask(False, **window))
        assert [t for t, _ in rollup.rows] == [t for t, _ in raw.rows] and raw.rows
        np.testing.assert_allclose(
            [v for _, v in rollup.rows], [v for _, v in raw.rows], rtol=1e-12, equal_nan=True
        )


def test_window_and_raw_rows(call):
    facility, _ = series()
    reply = query(call, metrics=["facility_w"], start_s=10, end_s=20)
    assert [r.time_s for r in reply.rows] == [float(k) for k in range(10, 20)]
    np.testing.assert_array_equal([r.values[0] for r in reply.rows], facility[10:20])
    # 10-minute buckets within [30 min, 60 min): three buckets of 600 samples
    reply = query(call, metrics=["it_w"], bucket_s=600, start_s=1800, end_s=3600)
    assert [r.time_s for r in reply.rows] == [1800.0, 2400.0, 3000.0]


def test_missing_values_are_nan(call):
    reply = query(call, metrics=["pue"], start_s=0, end_s=3)
    assert len(reply.rows) == 3 and all(np.isnan(r.values[0]) for r in reply.rows)


@pytest.mark.parametrize(("bucket_s", "page_size", "total"), [(0, 1000, N), (60, 7, 120)])
def test_paging_returns_every_row_once(call, bucket_s, page_size, total):
    async def pages(stub):
        times, token, n = [], "", 0
        while True:
            reply = await stub.Query(
                history_pb2.QueryRequest(
                    run_id=RUN,
                    metrics=["it_w"],
                    bucket_s=bucket_s,
                    page_size=page_size,
                    page_token=token,
                ),
                timeout=20,
            )
            assert len(reply.rows) <= page_size
            times += [r.time_s for r in reply.rows]
            n += 1
            token = reply.next_page_token
            if not token:
                return times, n

    times, n = call(pages)
    step = bucket_s or 1
    assert times == [float(k * step) for k in range(total)]
    assert n == -(-total // page_size)  # a full last page has no token after it


def test_default_page_size_is_1000(call):
    reply = query(call, metrics=["it_w"])
    assert len(reply.rows) == 1000 and reply.next_page_token


def test_list_runs(call):
    reply = call(lambda stub: stub.ListRuns(history_pb2.ListRunsRequest(), timeout=20))
    runs = {r.run_id: r for r in reply.runs}
    run = runs[RUN]
    assert (run.site_id, run.scenario, run.dt_s, run.horizon_s, run.status) == (
        "fairwater-wi",
        "fairwater-wi",
        1.0,
        7200.0,
        "running",
    )
    assert run.steps_stored == N
    assert run.started_at.ToDatetime(tzinfo=UTC) == STARTED
    other = call(
        lambda stub: stub.ListRuns(history_pb2.ListRunsRequest(site_id="elsewhere"), timeout=20)
    )
    assert list(other.runs) == []


def error(call, method, request) -> grpc.aio.AioRpcError:
    async def fn(stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(stub, method)(request, timeout=20)
        return info.value

    return call(fn)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metrics": ["bogus"]}, "metrics.0: unknown metric 'bogus' (known: "),
        ({"metrics": ["it_w", "it_w; DROP TABLE runs"]}, "metrics.1: unknown metric "),
        ({"metrics": []}, "metrics: at least one metric is required"),
        ({"run_id": ""}, "run_id: required"),
        ({"bucket_s": -1}, "bucket_s: must be >= 0"),
        ({"page_size": 10001}, "page_size: at most 10000"),
        ({"page_size": -1}, "page_size: must be >= 0"),
        (
            {"aggregate": AGG.AGGREGATE_PERCENTILE, "bucket_s": 60},
            "percentile: must be in (0, 100)",
        ),
        (
            {"aggregate": AGG.AGGREGATE_PERCENTILE, "bucket_s": 60, "percentile": 100},
            "percentile: must be in (0, 100)",
        ),
        ({"start_s": 10, "end_s": 5}, "end_s: must be greater than start_s"),
        ({"page_token": "not-a-token"}, "page_token: invalid page token"),
        # Forged: this request's fingerprint with an offset past PostgreSQL's bigint.
        (
            {
                "page_token": queries.encode_token(
                    10**30, queries._fingerprint(["", RUN, ["it_w"], None, None, 0.0, "avg"])
                )
            },
            "page_token: invalid page token",
        ),
        ({"metrics": ["it_w"] * 5000}, "metrics: at most 64 metrics, got 5000"),
        ({"start_s": 1e300}, "start_s: must be within +-1e+11 s"),
        ({"run_id": "run\x00"}, "run_id: 'run\\x00' holds control characters"),
        ({"run_id": "r" * 1_000_000}, "run_id: at most 128 characters, got 1000000"),
    ],
)
def test_bad_requests_name_the_field(call, fields, message):
    fields = {"run_id": RUN, "metrics": ["it_w"], **fields}
    exc = error(call, "Query", history_pb2.QueryRequest(**fields))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = exc.details()
    assert details is not None and details.startswith(message), details
    if message.endswith("(known: "):
        assert details.endswith("ambient_c)") and "facility_w" in details


def test_page_token_of_another_query_is_refused(call):
    first = query(call, metrics=["it_w"], page_size=10)
    exc = error(
        call,
        "Query",
        history_pb2.QueryRequest(
            run_id=RUN, metrics=["facility_w"], page_size=10, page_token=first.next_page_token
        ),
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == "page_token: does not match the request"


def test_unknown_run_is_not_found(call):
    exc = error(call, "Query", history_pb2.QueryRequest(run_id="nope", metrics=["it_w"]))
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    assert exc.details() == "run_id: run 'nope' not found"
    exc = error(
        call, "Query", history_pb2.QueryRequest(run_id=RUN, site_id="other", metrics=["it_w"])
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND


def test_list_runs_bad_page_size(call):
    exc = error(call, "ListRuns", history_pb2.ListRunsRequest(page_size=20000))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == "page_size: at most 10000"


# ---------------------------------------------------------------------------------- CLI


@pytest.fixture
def address(database):
    """The servicer on a free port, served from a thread (the CLI uses a sync channel)."""
    servicer = HistoryServicer(database)
    register = lambda server: server.add_servicer(  # noqa: E731
        history_pb2_grpc.add_HistoryServiceServicer_to_server, servicer
    )
    with served(register) as addr:
        yield addr


def test_cli_history(address, tmp_path):
    from typer.testing import CliRunner

    from services.cli.main import app

    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["history", "runs", "--address", address])
    assert result.exit_code == 0, result.output
    assert RUN in result.output
    png = tmp_path / "out.png"
    args = ["history", "query", "facility_w", "it_w", "--run", RUN, "--address", address]
    result = runner.invoke(app, [*args, "--agg", "p95", "--end", "2h", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "01:00:00" in result.output and png.stat().st_size > 0
    # query and export take the same window options (--from/--to; --start/--end too)
    same = runner.invoke(app, [*args, "--agg", "p95", "--from", "0s", "--to", "2h"])
    old = runner.invoke(app, [*args, "--agg", "p95", "--start", "0s", "--end", "2h"])
    assert same.exit_code == old.exit_code == 0 and same.output == old.output
    assert "01:00:00" in same.output and "02:00:00" not in same.output
    result = runner.invoke(app, [*args, "--to", "1e400s"])
    assert result.exit_code == 2
    assert "--to: invalid duration '1e400s' (must be finite, at most 100 years)" in result.output
    result = runner.invoke(app, ["history", "query", "bogus", "--run", RUN, "--address", address])
    assert result.exit_code == 2
    assert "error:" in result.output and "metrics.0: unknown metric 'bogus'" in result.output
    result = runner.invoke(app, ["history", "query", "it_w", "--run", "nope", "--address", address])
    assert result.exit_code == 2 and "NOT_FOUND" in result.output


# ------------------------------------------------------------------ CompareRuns, Export


def test_compare_runs(call):
    facility, _ = series()
    reply = call(
        lambda stub: stub.CompareRuns(
            history_pb2.CompareRunsRequest(
                run_a=RUN, run_b=RUN_B, metrics=["facility_w", "pue"], bucket_s=1800
            ),
            timeout=20,
        )
    )
    assert list(reply.metrics) == ["facility_w", "pue"]
    assert (reply.a.run_id, reply.a.steps, reply.b.run_id, reply.b.steps) == (
        RUN,
        N,
        RUN_B,
        3600,
    )
    fa, fb = reply.a.metrics[0], reply.b.metrics[0]
    b = 1.1 * facility[:3600]
    assert (fa.samples, fb.samples) == (N, 3600)
    np.testing.assert_allclose(
        [fa.avg, fa.min, fa.max, fb.avg, fb.min, fb.max],
        [facility.mean(), facility.min(), facility.max(), b.mean(), b.min(), b.max()],
        rtol=1e-12,
    )
    np.testing.assert_allclose(fa.energy_mwh, facility.sum() / 3.6e9, rtol=1e-12)
    np.testing.assert_allclose(fb.energy_mwh, b.sum() / 3.6e9, rtol=1e-12)
    delta = reply.deltas[0]
    assert delta.metric == "facility_w"
    np.testing.assert_allclose(delta.avg, b.mean() - facility.mean(), rtol=1e-9)
    np.testing.assert_allclose(delta.energy_mwh, (b.sum() - facility.sum()) / 3.6e9, rtol=1e-9)
    pue_a = reply.a.metrics[1]  # no samples: NaN, and no energy for a ratio
    assert pue_a.samples == 0 and np.isnan(pue_a.avg) and not pue_a.HasField("energy_mwh")
    assert not reply.deltas[1].HasField("energy_mwh")
    # the series: A's four half hours, B's first two, on one axis
    assert [r.time_s for r in reply.rows] == [0.0, 1800.0, 3600.0, 5400.0]
    got_a = [r.a[0] for r in reply.rows]
    np.testing.assert_allclose(got_a, facility.reshape(4, 1800).mean(axis=1), rtol=1e-12)
    got_b = [r.b[0] for r in reply.rows]
    np.testing.assert_allclose(got_b[:2], b.reshape(2, 1800).mean(axis=1), rtol=1e-12)
    assert np.isnan(got_b[2:]).all()
    # a window, default metrics, no series
    reply = call(
        lambda stub: stub.CompareRuns(
            history_pb2.CompareRunsRequest(run_a=RUN, run_b=RUN, start_s=0, end_s=600),
            timeout=20,
        )
    )
    assert list(reply.metrics)[:2] == ["facility_w", "it_w"] and not reply.rows
    assert reply.a.steps == 600 and [d.avg for d in reply.deltas[:2]] == [0.0, 0.0]


def export_bytes(call, **fields) -> tuple[bytes, list[int]]:
    async def fn(stub):
        sizes, data = [], b""
        async for chunk in stub.Export(history_pb2.ExportRequest(**fields), timeout=60):
            sizes.append(len(chunk.data))
            data += chunk.data
        return data, sizes

    return call(fn)


def test_export_chunks_have_a_floor(call):
    csv = history_pb2.EXPORT_FORMAT_CSV
    data, sizes = export_bytes(call, run_id=RUN, format=csv, chunk_bytes=1)
    floor = export_bytes(call, run_id=RUN, format=csv, chunk_bytes=16_384)
    assert (data, sizes) == floor  # 1-byte chunks are raised to the 16 KiB floor
    assert len(sizes) < len(data) / 1000 and max(sizes) == 16_384


def all_raw_rows(call, metrics, **window) -> list:
    rows, token = [], ""
    while True:
        reply = query(call, metrics=metrics, page_size=10_000, page_token=token, **window)
        rows += [(r.time_s, *r.values) for r in reply.rows]
        if not (token := reply.next_page_token):
            return rows


def test_export_parquet_reads_back_as_the_raw_rows(call, tmp_path):
    import pyarrow.parquet as pq

    metrics = ["facility_w", "it_w", "pue"]
    data, sizes = export_bytes(
        call,
        run_id=RUN,
        metrics=metrics,
        format=history_pb2.EXPORT_FORMAT_PARQUET,
        chunk_bytes=16_384,
    )
    assert len(sizes) > 1 and max(sizes) <= 16_384
    path = tmp_path / "run.parquet"
    path.write_bytes(data)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == N // 1000 + 1  # a row group per page of rows
    table = parquet.read()
    assert table.column_names == ["time_s", "step", *metrics]
    assert table.column("step").to_pylist() == list(range(N))
    got = np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False) for c in ["time_s", *metrics]]
    )
    want = np.array(all_raw_rows(call, metrics))
    assert got.shape == want.shape == (N, 4)
    np.testing.assert_array_equal(got, want)  # NaN == NaN here: the pue column is empty


def test_export_csv_window_and_all_columns(call):
    import csv
    import io

    data, sizes = export_bytes(
        call, run_id=RUN, format=history_pb2.EXPORT_FORMAT_CSV, start_s=100, end_s=3700
    )
    assert max(sizes) <= 1 << 20
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0][:4] == ["time_s", "step", "it_w", "facility_w"] and rows[0][-1] == "ambient_c"
    body = rows[1:]
    assert len(body) == 3600 and body[0][:2] == ["100.0", "100"]
    want = all_raw_rows(call, ["it_w", "facility_w"], start_s=100, end_s=3700)
    got = [(float(r[0]), float(r[2]), float(r[3])) for r in body]
    assert got == [tuple(w) for w in want]  # repr round-trips: exactly equal
    assert all(r[5] == "" for r in body)  # pue: no value, empty field


COMPARE = history_pb2.CompareRunsRequest
EXPORT = history_pb2.ExportRequest
CSV = history_pb2.EXPORT_FORMAT_CSV


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        ("CompareRuns", COMPARE(run_b=RUN), "INVALID_ARGUMENT", "run_a: required"),
        ("CompareRuns", COMPARE(run_a=RUN), "INVALID_ARGUMENT", "run_b: required"),
        (
            "CompareRuns",
            COMPARE(run_a=RUN, run_b=RUN, metrics=["it_w", "nope"]),
            "INVALID_ARGUMENT",
            "metrics.1: unknown metric 'nope'",
        ),
        (
            "CompareRuns",
            COMPARE(run_a=RUN, run_b=RUN, start_s=5, end_s=5),
            "INVALID_ARGUMENT",
            "end_s: must be greater than start_s",
        ),
        (
            "CompareRuns",
            COMPARE(run_a=RUN, run_b=RUN, bucket_s=-1),
            "INVALID_ARGUMENT",
            "bucket_s: must be >= 0",
        ),
        (
            "CompareRuns",
            COMPARE(run_a=RUN, run_b=RUN, bucket_s=0.5, start_s=0, end_s=7200),
            "INVALID_ARGUMENT",
            "bucket_s: more than 10000 buckets",
        ),
        (
            "CompareRuns",
            COMPARE(run_a=RUN, run_b="nope"),
            "NOT_FOUND",
            "run_b: run 'nope' not found",
        ),
        (
            "CompareRuns",
            COMPARE(run_a="nope", run_b=RUN),
            "NOT_FOUND",
            "run_a: run 'nope' not found",
        ),
        ("Export", EXPORT(format=CSV), "INVALID_ARGUMENT", "run_id: required"),
        ("Export", EXPORT(run_id=RUN), "INVALID_ARGUMENT", "format: required"),
        (
            "Export",
            EXPORT(run_id=RUN, format=CSV, metrics=["x"]),
            "INVALID_ARGUMENT",
            "metrics.0: unknown metric 'x'",
        ),
        (
            "Export",
            EXPORT(run_id=RUN, format=CSV, chunk_bytes=(1 << 20) + 1),
            "INVALID_ARGUMENT",
            "chunk_bytes: must be in [0, 1048576]",
        ),
        (
            "Export",
            EXPORT(run_id=RUN, format=CSV, start_s=float("nan")),
            "INVALID_ARGUMENT",
            "start_s: must be finite",
        ),
        ("Export", EXPORT(run_id="nope", format=CSV), "NOT_FOUND", "run_id: run 'nope' not"),
        (
            "Export",
            EXPORT(run_id=RUN, site_id="elsewhere", format=CSV),
            "NOT_FOUND",
            "run_id: run 'run-hist-1' not found in site",
        ),
    ],
)
def test_compare_and_export_bad_requests(call, method, request_, code, message):
    async def fn(stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            reply = getattr(stub, method)(request_, timeout=20)
            if method == "Export":
                async for _ in reply:
                    pass
            else:
                await reply
        return info.value

    exc = call(fn)
    assert exc.code() == getattr(grpc.StatusCode, code)
    details = exc.details()
    assert details is not None and details.startswith(message), details


def test_cli_export_and_compare(address, tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from services.cli.main import app

    runner = CliRunner(env={"COLUMNS": "200"})
    out = tmp_path / "sub" / "run.parquet"
    args = ["history", "export", RUN, "--address", address, "--out", str(out)]
    result = runner.invoke(
        app, [*args, "--format", "parquet", "--metrics", "it_w,facility_w", "--to", "1h"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["time_s", "step", "it_w", "facility_w"] and len(table) == 3600
    csv_out = tmp_path / "run.csv"
    result = runner.invoke(
        app,
        ["history", "export", RUN, "--address", address, "--out", str(csv_out), "--from", "1h"],
    )
    assert result.exit_code == 0, result.output
    assert len(csv_out.read_text().splitlines()) == 3601
    # a failed export leaves neither the file nor a temp file behind
    bad = tmp_path / "bad" / "x.csv"
    result = runner.invoke(
        app, ["history", "export", "nope", "--address", address, "--out", str(bad)]
    )
    assert result.exit_code == 2 and "NOT_FOUND" in result.output
    assert list(bad.parent.iterdir()) == []
    result = runner.invoke(app, [*args, "--format", "xlsx"])
    assert result.exit_code == 2 and "--format" in result.output
    result = runner.invoke(app, ["history", "compare", RUN, RUN_B, "--address", address])
    assert result.exit_code == 0, result.output
    assert "facility_w" in result.output and "MWh" in result.output and "+10.00%" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "15s", "--dt", "10s"], "--duration: 15s is not a whole number"),
        (["--report", "x"], "--report: needs --duration"),
        (["--duration", "1h", "--dt", "abc"], "--dt: invalid duration 'abc'"),
        (["--duration", "1h", "--speed", "-1"], "--speed: must be >= 0"),
        (["--duration", "1h", "--paused"], "--paused: not with --duration"),
    ],
)
def test_twin_up_bad_report_options_fail_before_starting(args, message):
    from typer.testing import CliRunner

    from services.cli.main import app

    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["up", "tests/sites/small.yaml", *args])
    assert result.exit_code == 2 and message in result.output, result.output
