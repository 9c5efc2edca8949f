"""``twin calibrations``: the calibrations stored in the history database (by ``twin
calibrate --run`` and the Calibrate RPC): a list, or one of them with its estimates and
statistics, its site file written with ``--out``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.errors import fail
from services.cli.tables import print_whole


def calibrations(
    calibration_id: Annotated[
        str | None, typer.Argument(help="show this one (default: list them)")
    ] = None,
    run: Annotated[str, typer.Option(help="only those fitted on this run")] = "",
    limit: Annotated[int, typer.Option(help="most to list")] = 50,
    out: Annotated[Path | None, typer.Option(help="write the calibrated site file here")] = None,
    db: Annotated[
        str | None,
        typer.Option(help="history database (conninfo or URL)", envvar="TWIN_DATABASE_URL"),
    ] = None,
) -> None:
    """List the stored calibrations, or show one."""
    import psycopg

    from services.calibration_store import list_stored, load

    if not db:
        fail("no database: pass --db or set TWIN_DATABASE_URL")
    if not 1 <= limit <= 1000:
        fail(f"--limit: must be 1..1000, got {limit}")
    try:
        if calibration_id is None:
            _list(list_stored(db, run, limit))
            return
        found = load(db, calibration_id)
    except psycopg.Error as exc:
        fail(f"--db: {str(exc).strip() or exc!r}")
    if found is None:
        fail(f"no calibration {calibration_id!r}")
    _show(found)
    if out is not None:
        from services.cli.files import write_atomic

        try:
            write_atomic(out, found.site_yaml)
        except OSError as exc:
            fail(f"--out {out}: {exc.strerror or exc}")
        Console().print(f"wrote {out}")


def _when(seconds: float) -> str:
    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _list(items) -> None:
    table = Table(title="calibrations")
    for col in ("calibration", "site", "run", "created", "window", "state", "warnings"):
        table.add_column(col, no_wrap=col == "calibration")
    for c in items:
        state = {1: "running", 2: "done", 3: "failed"}.get(c.state, "?")
        window = f"{_when(c.window_start_s)}, {c.duration_s / 3600:g} h"
        table.add_row(
            c.calibration_id, c.site_id, c.run_id or "-",
            c.created_at.ToDatetime().isoformat(timespec="seconds") + "Z",
            window, state, str(len(c.warnings)),
        )  # fmt: skip
    print_whole(table)


def _f(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def _show(c) -> None:
    params = Table(title=f"calibration {c.calibration_id} (run {c.run_id or '-'})")
    for col in ("parameter", "site value", "estimate", "± std error"):
        params.add_column(col, justify="left" if col == "parameter" else "right")
    for e in c.estimates:
        se = f"{e.std_error:.4g}" if e.identifiable else "unidentifiable"
        params.add_row(e.path, f"{e.start:.6g}", f"{e.value:.6g}", se)
    print_whole(params)
    fits = Table(title=f"fit at {c.stats_s:g} s (ASHRAE Guideline 14): before → after")
    for col in ("quantity", "n", "CV(RMSE) %", "NMBE %", "R²"):
        fits.add_column(col, justify="left" if col == "quantity" else "right")
    for q in c.fits:
        b, a = q.before, q.after
        fits.add_row(
            q.quantity, str(a.n), f"{_f(b.cv_rmse_pct)} → {_f(a.cv_rmse_pct)}",
            f"{_f(b.nmbe_pct)} → {_f(a.nmbe_pct)}", f"{_f(b.r2)} → {_f(a.r2)}",
        )  # fmt: skip
    print_whole(fits)
    for w in c.warnings:
        Console(stderr=True).print(f"warning: {w}", highlight=False)
