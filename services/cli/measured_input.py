"""Where ``twin calibrate`` and ``twin backtest`` read measurements: a file
(``--measured``) or a run's measurements in the history database (``--run``, with an
optional ``--from``/``--to`` window in seconds of the run, on ``--db``). One-line errors
naming the option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from services.cli.errors import console, fail, seconds

if TYPE_CHECKING:
    from twin_core.calibrate import Measured
    from twin_core.site import Site

DB_HELP = "history database (conninfo or URL) for --run"


@dataclass(frozen=True)
class Input:
    """The measured series, where the window starts on the site's clock (the run's
    simulated seconds; a table's own ``time_s`` when it counts from the site's start;
    0 for Unix times or a recording), and the run read (empty for a file)."""

    measured: Measured
    offset_s: float
    run_id: str


def read_input(
    site: Site,
    *,
    measured: Path | None,
    run: str | None,
    start: str | None,
    end: str | None,
    db: str | None,
    resolution_s: float | None,
) -> Input:
    from services.measured_series import MeasuredFileError, measured_from_run, read_measured_at

    if (measured is None) == (run is None):
        fail("give --measured FILE or --run RUN (one of them)")
    if measured is not None:
        if start is not None or end is not None:
            fail("--from/--to: only with --run (a file's window is the file)")
        try:
            data, notes, offset = read_measured_at(measured, site, resolution_s)
        except MeasuredFileError as exc:
            fail(str(exc))
        except ValueError as exc:
            fail(f"--measured {measured}: {exc}")
        _notes(notes)
        return Input(data, offset, "")
    assert run is not None
    if not db:
        fail("--run: no database (pass --db or set TWIN_DATABASE_URL)")
    import psycopg

    from services.historian.queries import QueryError, RunNotFound

    start_s = seconds("--from", start, allow_zero=True)
    end_s = seconds("--to", end)
    try:
        got = measured_from_run(
            db, run, site, start_s=start_s, end_s=end_s, step_s=resolution_s or 60.0
        )
    except QueryError as exc:
        option = {"start_s": "--from", "end_s": "--to"}.get(exc.field, "--run")
        fail(f"{option}: {str(exc).split(': ', 1)[1]}")
    except RunNotFound as exc:
        fail(f"--run: {str(exc).split(': ', 1)[1]}")
    except (MeasuredFileError, ValueError) as exc:
        fail(str(exc))
    except psycopg.Error as exc:
        fail(f"--db: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    _notes(got.notes)
    return Input(got.measured, got.offset_s, run)


def _notes(notes: list[str]) -> None:
    for note in notes:
        console.print(f"note: {escape(note)}")
