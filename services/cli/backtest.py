"""``twin backtest``: run a (calibrated) site over a measured window it was not fitted on,
from the measured initial state and driven by the measured weather, and print the
ASHRAE Guideline 14 statistics per measured quantity (optionally as JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.cli.calibrate import _f, _finite, _site_path
from services.cli.errors import console, fail, seconds
from services.cli.measured_input import DB_HELP, read_input
from services.cli.tables import print_whole


def backtest(
    site: Annotated[
        str, typer.Argument(help="site file (a calibrated one) or seeded scenario name")
    ],
    measured: Annotated[
        Path | None,
        typer.Option(help="measured series: a `twin gateway record` file or a quantity table"),
    ] = None,
    run: Annotated[
        str | None, typer.Option(help="or a run's measurements in the history database")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="with --run: window start, time into the run")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="with --run: window end, time into the run")
    ] = None,
    db: Annotated[str | None, typer.Option(help=DB_HELP, envvar="TWIN_DATABASE_URL")] = None,
    dt_: Annotated[str, typer.Option("--dt", help="coupling interval of the rollout")] = "10s",
    resolution: Annotated[
        str | None,
        typer.Option(help="measurement interval (default: the file's, 1m for a recording)"),
    ] = None,
    stats: Annotated[str, typer.Option(help="resolution of the statistics")] = "1h",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the result as JSON")
    ] = None,
    x64: Annotated[bool, typer.Option(help="float64 (the default)")] = True,
) -> None:
    """Run the twin over a held-out measured window and report how well it predicts it."""
    from twin_core.site import SiteError, load_site

    step = seconds("--dt", dt_)
    stats_s = seconds("--stats", stats)
    resolution_s = seconds("--resolution", resolution)
    import jax

    jax.config.update("jax_enable_x64", x64)
    try:
        base = load_site(_site_path(site))
    except SiteError as exc:
        fail(str(exc))
    source = read_input(
        base, measured=measured, run=run, start=from_, end=to, db=db, resolution_s=resolution_s
    )
    import jax.numpy as jnp

    from twin_core.backtest import backtest as run_backtest

    try:
        result = run_backtest(
            base,
            source.measured,
            dt=step,
            offset_s=source.offset_s,
            stats_s=stats_s,
            dtype=jnp.float64 if x64 else jnp.float32,
        )
    except (ValueError, SiteError) as exc:
        fail(str(exc))
    _print(result)
    if json_out is not None:
        from services.cli.files import write_atomic

        doc = {"site": base.name, "run_id": source.run_id, **result.to_dict()}
        try:
            write_atomic(json_out, json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            fail(f"--json {json_out}: {exc.strerror or exc}")
        console.print(f"wrote {json_out}")


def _print(result) -> None:
    m = result.measured
    title = (
        f"backtest: {m.duration_s / 3600:g} h from {result.offset_s:g} s, "
        f"statistics at {result.stats_s:g} s (ASHRAE Guideline 14)"
    )
    table = Table(title=title)
    for col in ("quantity", "n", "CV(RMSE) %", "NMBE %", "R²"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    for q, s in result.stats.items():
        table.add_row(q, str(s.n), _f(s.cv_rmse_pct, 2), _f(s.nmbe_pct, 2), _f(s.r2))
    print_whole(table)
    for what, value in result.initialised.items():
        console.print(f"initialised from measurements: {what} = {value:.6g}")
    console.print("not initialised (the model's guess): " + "; ".join(result.not_initialised))
