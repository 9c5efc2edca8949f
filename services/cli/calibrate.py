"""``twin calibrate``: fit a site's physical parameters to measured series, print the
estimates and the ASHRAE Guideline 14 statistics before and after, and write the
calibrated site file."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.errors import console, fail, seconds
from services.cli.measured_input import DB_HELP, read_input
from services.cli.tables import print_whole


def _bounds(items: list[str]) -> dict[str, tuple[float, float]]:
    """``PATH=LO:HI`` options -> path -> (lo, hi); a bad one fails naming it."""
    out: dict[str, tuple[float, float]] = {}
    for item in items:
        path, sep, rest = item.partition("=")
        lo, colon, hi = rest.partition(":")
        try:
            if not (sep and colon and path.strip()):
                raise ValueError
            out[path.strip()] = (float(lo), float(hi))
        except ValueError:
            fail(f"--fit {item!r}: expected PATH=LO:HI, e.g. cooling.cdu.ua_w_per_k=1e5:4e5")
    return out


def _noise(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            fail(f"--noise {item!r}: expected QUANTITY=SIGMA, e.g. facility_w=5000")
    return out


def _site_path(text: str) -> Path:
    from services.scenario import SCENARIOS, is_site_file

    return Path(text) if is_site_file(text) else SCENARIOS / f"{text}.yaml"


def calibrate(
    site: Annotated[str, typer.Argument(help="site file (YAML) or seeded scenario name")],
    fit: Annotated[list[str], typer.Option(help="a parameter to fit with bounds: PATH=LO:HI")],
    out: Annotated[Path, typer.Option(help="the calibrated site file to write")],
    measured: Annotated[
        Path | None,
        typer.Option(
            help="measured series: a `twin gateway record` file, or a time_s column and "
            "one column per model quantity (Parquet or CSV)"
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="or a run's measurements in the history database (stored with it)"),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="with --run: window start, time into the run")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="with --run: window end, time into the run")
    ] = None,
    db: Annotated[str | None, typer.Option(help=DB_HELP, envvar="TWIN_DATABASE_URL")] = None,
    dt_: Annotated[str, typer.Option("--dt", help="coupling interval of the rollout")] = "10s",
    reference_dt: Annotated[
        str | None,
        typer.Option(
            help="a finer step (e.g. 1s) the estimates are corrected to after the fit at --dt"
        ),
    ] = None,
    resolution: Annotated[
        str | None,
        typer.Option(help="measurement interval (default: the file's, 1m for a recording)"),
    ] = None,
    stats: Annotated[str, typer.Option(help="resolution of the statistics")] = "1h",
    noise: Annotated[
        list[str] | None, typer.Option(help="measurement noise of a quantity: QUANTITY=SIGMA")
    ] = None,
    iterations: Annotated[int, typer.Option(help="most Gauss-Newton iterations")] = 20,
    report: Annotated[Path | None, typer.Option(help="also write the whole result as JSON")] = None,
    x64: Annotated[
        bool, typer.Option(help="float64 (the default; float32 is faster, coarser)")
    ] = True,
) -> None:
    """Fit site parameters to measured series and write the calibrated site file."""
    from twin_core.inputs import load_yaml
    from twin_core.site import SiteError, load_site

    step = seconds("--dt", dt_)
    stats_s = seconds("--stats", stats)
    reference_s = seconds("--reference-dt", reference_dt) if reference_dt else None
    resolution_s = seconds("--resolution", resolution)
    bounds = _bounds(fit)
    sigma = _noise(noise or [])
    path = _site_path(site)
    import jax

    jax.config.update("jax_enable_x64", x64)  # before the model makes any array
    try:
        base = load_site(path)
        doc = load_yaml(path.read_text(), str(path), SiteError)
    except SiteError as exc:
        fail(str(exc))
    if not out.parent.is_dir():
        fail(f"--out {out}: folder {out.parent} does not exist")

    source = read_input(
        base, measured=measured, run=run, start=from_, end=to, db=db, resolution_s=resolution_s
    )
    data = source.measured

    import jax.numpy as jnp

    from twin_core.calibrate import calibrate as fit_site

    progress = Progress(
        TextColumn("[bold]calibrating[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} iterations"),
        TextColumn("{task.fields[cost]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal and os.environ.get("TWIN_PROGRESS") != "1",
    )
    with progress:
        task = progress.add_task("fit", total=iterations, cost="compiling")

        def advance(k: int, total: int, cost: float) -> None:
            progress.update(task, completed=k, cost=f"cost {cost:.6g}")

        try:
            result = fit_site(
                base,
                data,
                fit=bounds,
                dt=step,
                noise=sigma,
                stats_s=stats_s,
                max_iterations=iterations,
                dtype=jnp.float64 if x64 else jnp.float32,
                progress=advance,
                offset_s=source.offset_s,
                reference_dt=reference_s,
            )
        except (ValueError, SiteError) as exc:
            fail(_option_name(str(exc)))

    from services.cli.files import write_atomic
    from twin_core.calibrated_file import calibrated_site_text

    text = calibrated_site_text(
        doc, result, base, base=path.name, out_dir=out.parent, date=dt.date.today()
    )
    try:
        result.site(base)  # the calibrated values validate as a site
        write_atomic(out, text)
        if report is not None:
            text_json = json.dumps(_finite(result.to_dict()), indent=2, allow_nan=False)
            write_atomic(report, text_json + "\n")
    except SiteError as exc:
        fail(f"--out {out}: the calibrated site does not validate ({exc})")
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    _print(result)
    Console().print(f"wrote {out}" + (f" and {report}" if report else ""))
    if source.run_id and db:
        _store(db, base.name, source.run_id, source.offset_s, result, text)


def _store(db: str, site_id: str, run_id: str, offset_s: float, result, text: str) -> None:
    """The result in the database with the run it was fitted on."""
    import psycopg

    from services.calibration_record import fill, new_record
    from services.calibration_store import save

    record = new_record(site_id, run_id, offset_s)
    fill(record, result, text)
    try:
        save(db, record)
    except psycopg.Error as exc:
        fail(f"--db: the calibration was not stored ({str(exc).strip() or exc!r})")
    Console().print(f"stored calibration {record.calibration_id} with run {run_id}")


def _option_name(message: str) -> str:
    """``fit.PATH: ...`` -> ``--fit PATH: ...`` (the option the user typed)."""
    for field, option in (
        ("fit.", "--fit "),
        ("noise.", "--noise "),
        ("reference_dt:", "--reference-dt:"),
    ):
        if message.startswith(field):
            return option + message.removeprefix(field)
    return message


def _finite(value: object) -> object:
    """``value`` with every non-finite number as null (JSON has no inf or NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _f(x: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{digits}f}"


def _print(result) -> None:
    corrected = result.reference_dt is not None
    title = f"estimates ({result.iterations} iterations"
    title += f", corrected to a {result.reference_dt:g} s step)" if corrected else ")"
    params = Table(title=title)
    columns = ["parameter", "site value", "estimate", "± std error", "bounds"]
    columns += ["step correction"] if corrected else []
    for col in columns:
        params.add_column(col, justify="left" if col == "parameter" else "right")
    for path, e in result.estimates.items():
        se = "unidentifiable" if not math.isfinite(e.std_error) else f"{e.std_error:.4g}"
        row = [path, f"{e.start:.6g}", f"{e.value:.6g}", se, f"{e.lower:g} … {e.upper:g}"]
        params.add_row(*row, *([f"{e.step_correction:+.4g}"] if corrected else []))
    print_whole(params)
    fit = Table(title=f"fit at {result.stats_s:g} s (ASHRAE Guideline 14): before → after")
    for col in ("quantity", "n", "CV(RMSE) %", "NMBE %", "R²"):
        fit.add_column(col, justify="left" if col == "quantity" else "right")
    for q, after in result.after.items():
        before = result.before[q]
        fit.add_row(
            q,
            str(after.n),
            f"{_f(before.cv_rmse_pct, 2)} → {_f(after.cv_rmse_pct, 2)}",
            f"{_f(before.nmbe_pct, 2)} → {_f(after.nmbe_pct, 2)}",
            f"{_f(before.r2)} → {_f(after.r2)}",
        )
    print_whole(fit)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
