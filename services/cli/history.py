"""``twin history``: the historian's gRPC History API from the command line: the stored
runs, a run's series (table, optional plot), an export to CSV/Parquet, two runs compared."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer
from rich.console import Console
from rich.table import Table

from services.cli.errors import console, fail, rpc_failed, seconds
from services.cli.extras import need
from services.cli.files import write_atomic
from services.cli.tables import clock, print_whole

if TYPE_CHECKING:  # imported where used, to keep the CLI's start fast
    from twin.history.v1.history_pb2 import Aggregate

history_app = typer.Typer(
    help="Query the history (the historian's gRPC API).", no_args_is_help=True
)
HISTORY_ADDRESS = "127.0.0.1:50056"
AGGREGATE_CHOICES = ("avg", "min", "max", "last", "sum", "p50", "p95", "p99", "pNN")


def history_call(address: str, method: str, request):
    """``method`` of the History API at ``address``; a gRPC error fails in one line."""
    import grpc

    from services.cli.channel import client_channel as open_channel
    from twin.history.v1 import history_pb2_grpc

    with open_channel(address) as channel:
        try:
            return getattr(history_pb2_grpc.HistoryServiceStub(channel), method)(
                request, timeout=60
            )
        except grpc.RpcError as exc:
            rpc_failed(method, address, exc)


def _aggregate(text: str) -> tuple[Aggregate, float]:
    """``avg``/``min``/``max``/``last``/``sum`` or ``pNN`` (a percentile, e.g. p95)."""
    from twin.history.v1 import history_pb2

    name = text.strip().lower()
    if name.startswith("p") and len(name) > 1:
        try:
            return history_pb2.AGGREGATE_PERCENTILE, float(name[1:])
        except ValueError:
            pass
    value = getattr(history_pb2, f"AGGREGATE_{name.upper()}", None)
    if value is None or name in ("unspecified", "percentile"):
        fail(f"--agg: unknown aggregate {text!r} (expected one of {', '.join(AGGREGATE_CHOICES)})")
    return value, 0.0


@history_app.command("runs")
def history_runs(
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
    site: Annotated[str, typer.Option(help="only this site")] = "",
) -> None:
    """The stored runs, most recent first."""
    from twin.history.v1 import history_pb2

    rows: list[tuple[str, ...]] = []
    token = ""
    while True:
        reply = history_call(
            address, "ListRuns", history_pb2.ListRunsRequest(site_id=site, page_token=token)
        )
        for r in reply.runs:
            rows.append((
                r.run_id,
                r.site_id,
                r.scenario,
                r.started_at.ToDatetime().isoformat(timespec="seconds") + "Z",
                f"{r.dt_s:g}",
                f"{r.horizon_s:g}",
                r.status,
                str(r.steps_stored),
            ))  # fmt: skip
        token = reply.next_page_token
        if not token:
            break
    table = Table(title="runs")
    columns = ("run", "site", "scenario", "started", "dt (s)", "horizon (s)", "status", "steps")
    for i, column in enumerate(columns):
        # Ids and times are copied into other commands: never cut or wrapped, whatever the
        # terminal width (the other columns wrap instead).
        whole = column in ("run", "started")
        width = max([len(column), *(len(row[i]) for row in rows)]) if whole else None
        table.add_column(column, no_wrap=whole, min_width=width)
    for row in rows:
        table.add_row(*row)
    print_whole(table)


@history_app.command("query")
def history_query(
    metrics: Annotated[
        list[str] | None,
        typer.Argument(help="site_series columns, e.g. facility_w (with --measured: the run id)"),
    ] = None,
    run: Annotated[str | None, typer.Option(help="run id (see `twin history runs`)")] = None,
    bucket: Annotated[
        str | None,
        typer.Option(help="bucket width, e.g. 1m, 1h; 0 = raw (default 1h; --measured: 1m)"),
    ] = None,
    agg: Annotated[str, typer.Option(help="avg, min, max, last, sum or pNN")] = "avg",
    start: Annotated[
        str | None, typer.Option("--from", "--start", help="simulated start, e.g. 0s, 6h")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", "--end", help="simulated end (exclusive), e.g. 24h"),
    ] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
    plot: Annotated[Path | None, typer.Option(help="also plot the series to this PNG")] = None,
    limit: Annotated[int, typer.Option(help="rows at most (all pages up to this)")] = 100_000,
    measured: Annotated[
        str | None,
        typer.Option(help="a measured entity (cdu/0, rack/3/1, meter): measured vs modelled"),
    ] = None,
    quantity: Annotated[
        str | None,
        typer.Option(help="with --measured: the telemetry quantity, e.g. supply_temperature_c"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="with --measured: also write the rows to this CSV")
    ] = None,
) -> None:
    """One run's site series, bucketed (default hourly averages) or raw; with --measured,
    an entity's measured series beside the modelled one (bucket averages)."""
    from twin.history.v1 import history_pb2

    if measured is not None:
        run_id = run if run is not None else _the_run(metrics)
        measured_query(address, run_id, measured, quantity, bucket or "1m", start, end, out)
        return
    for option, given in (("--quantity", quantity), ("--out", out)):
        if given is not None:
            fail(f"{option}: only with --measured")
    if run is None:
        fail("--run: required (the run id, see `twin history runs`)")
    if not metrics:
        fail("METRICS: at least one site_series column, e.g. facility_w")
    bucket_s = seconds("--bucket", bucket or "1h", allow_zero=True) or 0.0
    aggregate, percentile = _aggregate(agg)
    request = history_pb2.QueryRequest(
        run_id=run,
        metrics=metrics,
        bucket_s=bucket_s,
        aggregate=aggregate,
        percentile=percentile,
        page_size=10_000,
    )
    if (start_s := seconds("--from", start, allow_zero=True)) is not None:
        request.start_s = start_s
    if (end_s := seconds("--to", end, allow_zero=True)) is not None:
        request.end_s = end_s
    rows: list = []
    while len(rows) < limit:
        reply = history_call(address, "Query", request)
        rows += list(reply.rows)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    rows = rows[:limit]
    label = "raw" if bucket_s == 0 else f"{agg} per {bucket}"
    table = Table(title=f"{run}: {label}")
    table.add_column("time")
    for m in metrics:
        table.add_column(m, justify="right")
    for row in rows:
        table.add_row(clock(row.time_s), *(f"{v:.6g}" for v in row.values))
    Console().print(table)
    if plot is not None:
        need("matplotlib", "plot", "--png")
        from services.cli.history_plots import series_png

        series_png(plot, metrics, rows, f"{run}: {label}")
        console.print(f"wrote {plot}")


def _the_run(arguments: list[str] | None) -> str:
    """``twin history query RUN_ID --measured ENTITY``: the one argument is the run."""
    if not arguments or len(arguments) != 1:
        fail("--measured: give the run, as the one argument or with --run")
    return arguments[0]


def measured_query(
    address: str,
    run: str,
    entity: str,
    quantity: str | None,
    bucket: str,
    start: str | None,
    end: str | None,
    out: Path | None,
) -> None:
    """``QueryMeasured``: a table of time, measured, modelled (and the CSV with ``out``)."""
    import math

    from twin.history.v1 import history_pb2

    request = history_pb2.QueryMeasuredRequest(
        run_id=run,
        entity=entity,
        quantity=quantity or "",
        bucket_s=seconds("--bucket", bucket, allow_zero=True) or 0.0,
    )
    if (start_s := seconds("--from", start, allow_zero=True)) is not None:
        request.start_s = start_s
    if (end_s := seconds("--to", end, allow_zero=True)) is not None:
        request.end_s = end_s
    reply = history_call(address, "QueryMeasured", request)
    modelled = reply.modelled or "(no modelled series)"
    table = Table(title=f"{run}: {reply.entity} {reply.quantity}, avg per {bucket}")
    for column in ("time", "measured", f"modelled: {modelled}"):
        table.add_column(column, justify="left" if column == "time" else "right")

    def text(v: float) -> str:
        return "" if math.isnan(v) else f"{v:.6g}"

    for row in reply.rows:
        table.add_row(clock(row.time_s), text(row.measured), text(row.modelled))
    Console().print(table)
    if out is not None:
        lines = ["time_s,measured,modelled"]
        lines += [
            f"{r.time_s!r},{_csv_field(r.measured)},{_csv_field(r.modelled)}" for r in reply.rows
        ]
        try:
            write_atomic(out, "\n".join(lines) + "\n")
        except OSError as exc:
            fail(f"--out {out}: {exc.strerror or exc}")
        console.print(f"wrote {out} ({len(reply.rows)} rows)")


def _csv_field(value: float) -> str:
    """A CSV field: the value in full precision, empty where there is none (NaN)."""
    return "" if value != value else repr(value)


def _metric_list(values: list[str] | None) -> list[str]:
    """``--metrics a,b --metrics c`` -> [a, b, c]."""
    return [m.strip() for v in values or [] for m in v.split(",") if m.strip()]


@history_app.command("export")
def history_export(
    run: Annotated[str, typer.Argument(help="run id (see `twin history runs`)")],
    out: Annotated[Path, typer.Option(help="file to write (replaced atomically)")],
    format_: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    metrics: Annotated[
        list[str] | None, typer.Option(help="site_series columns (default: all)")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", "--start", help="simulated start, e.g. 6h")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", "--end", help="simulated end (exclusive), e.g. 24h")
    ] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
) -> None:
    """One run's site series to a CSV or Parquet file (the History API's Export)."""
    from twin.history.v1 import history_pb2

    kinds = {"csv": history_pb2.EXPORT_FORMAT_CSV, "parquet": history_pb2.EXPORT_FORMAT_PARQUET}
    if format_ not in kinds:
        fail(f"--format: {format_!r} is not one of csv, parquet")
    request = history_pb2.ExportRequest(
        run_id=run, metrics=_metric_list(metrics), format=kinds[format_]
    )
    for option, text, field in (("--from", from_, "start_s"), ("--to", to, "end_s")):
        if (value := seconds(option, text, allow_zero=True)) is not None:
            setattr(request, field, value)
    size = export_to_file(address, request, out)
    console.print(f"wrote {out} ({size:,} bytes)")


def export_to_file(address: str, request, out: Path) -> int:
    """Stream ``Export`` into ``out`` atomically, so a failed export never leaves a
    partial file (its folder is created). Returns its size."""
    import grpc

    from services.cli.channel import client_channel as open_channel
    from twin.history.v1 import history_pb2_grpc

    def stream(f: BinaryIO) -> None:
        with open_channel(address) as channel:
            stub = history_pb2_grpc.HistoryServiceStub(channel)
            try:
                for chunk in stub.Export(request, timeout=600):
                    f.write(chunk.data)
            except grpc.RpcError as exc:
                rpc_failed("Export", address, exc)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(out, stream)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")


@history_app.command("compare")
def history_compare(
    run_a: Annotated[str, typer.Argument(help="baseline run id")],
    run_b: Annotated[str, typer.Argument(help="run compared with it")],
    metrics: Annotated[
        list[str] | None, typer.Option(help="site_series columns (default: the main KPIs)")
    ] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
) -> None:
    """Two runs side by side: each metric's average, min, max and energy, and B - A."""
    from twin.history.v1 import history_pb2

    reply = history_call(
        address,
        "CompareRuns",
        history_pb2.CompareRunsRequest(run_a=run_a, run_b=run_b, metrics=_metric_list(metrics)),
    )
    table = Table(title=f"A = {run_a} ({reply.a.steps} steps), B = {run_b} ({reply.b.steps})")
    for column in ("metric", "", "A", "B", "B - A", "B / A - 1"):
        table.add_column(column, justify="left" if column in ("metric", "") else "right")
    for sa, sb, d in zip(reply.a.metrics, reply.b.metrics, reply.deltas, strict=True):
        figures = [("avg", sa.avg, sb.avg, d.avg), ("min", sa.min, sb.min, d.min)]
        figures.append(("max", sa.max, sb.max, d.max))
        if d.HasField("energy_mwh"):
            figures.append(("MWh", sa.energy_mwh, sb.energy_mwh, d.energy_mwh))
        for i, (what, a, b, delta) in enumerate(figures):
            rel = f"{b / a - 1:+.2%}" if a else "-"
            name = sa.metric if i == 0 else ""
            table.add_row(name, what, f"{a:.6g}", f"{b:.6g}", f"{delta:+.6g}", rel)
    Console().print(table)
