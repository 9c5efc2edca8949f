"""A run's measured history as calibration input: the ``measurements`` rows of one run
(optionally a window of it), in the columns of a ``twin gateway record`` file, so that
``services.measured_series`` maps them to model quantities exactly as it maps a recording.

Times are put on the run's clock: a measurement at wall time ``t`` is at ``(t -
runs.started_at) * real_time_factor`` simulated seconds from the run's start (the model's
time axis; see ``services.historian.measured``). The window (``start_s``/``end_s``) is in
those seconds too. No JAX here: the historian layer only reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from services.historian.queries import QueryError, RunNotFound, check_id, check_window

MAX_ROWS = 20_000_000  # a week of a few hundred points at 10 s; beyond it, a narrower window


@dataclass(frozen=True)
class RunWindow:
    """The rows read (``table``: entity, quantity, time_s on the run's clock, value) and the
    run's record: its site, wall-clock start (Unix s) and simulated s per wall s."""

    run_id: str
    site_id: str
    started_at_s: float
    rate: float
    table: pa.Table


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=10)


def read_run_window(
    url: str,
    run_id: str,
    start_s: float | None = None,
    end_s: float | None = None,
    site_id: str = "",
) -> RunWindow:
    """The measurements of ``run_id`` in [start_s, end_s) seconds of the run. Raises
    ``QueryError`` (naming the field) for a bad request or an empty window,
    ``RunNotFound`` for an unknown run, ``psycopg.Error`` when the database is away."""
    if not run_id:
        raise QueryError("run_id", "required")
    check_id("run_id", run_id)
    check_id("site_id", site_id)
    check_window(start_s, end_s)
    with _connect(url) as conn:
        row = conn.execute(
            "SELECT site_id, started_at, real_time_factor FROM runs WHERE run_id = %s",
            (run_id,),
        ).fetchone()
        if row is None or (site_id and row[0] != site_id):
            where = f" in site {site_id!r}" if site_id else ""
            raise RunNotFound(f"run_id: run {run_id!r} not found{where}")
        site, started, rate = row[0], row[1], row[2]
        rate = float(rate) if rate and math.isfinite(rate) and rate > 0 else 1.0
        params: list[object] = [started, rate, run_id, site]
        window = sql.SQL("")
        if start_s is not None:
            window += sql.SQL(" AND time >= %s")
            params.append(_wall(started, start_s / rate))
        if end_s is not None:
            window += sql.SQL(" AND time < %s")
            params.append(_wall(started, end_s / rate))
        statement = sql.SQL(
            "SELECT entity, quantity, extract(epoch FROM time - %s)::float8 * %s, value"
            " FROM measurements WHERE run_id = %s AND site_id = %s{window}"
            " ORDER BY time LIMIT {limit}"
        ).format(window=window, limit=sql.Literal(MAX_ROWS + 1))
        cur = conn.execute(statement, params)
        rows = cur.fetchall()
    if len(rows) > MAX_ROWS:
        raise QueryError("end_s", f"more than {MAX_ROWS} measurements: choose a shorter window")
    if not rows:
        span = "" if start_s is None and end_s is None else " in the window"
        raise QueryError("run_id", f"run {run_id!r} has no measurements{span}")
    entity, quantity, times, values = zip(*rows, strict=True)
    table = pa.table({
        "entity": pa.array(entity, pa.string()),
        "quantity": pa.array(quantity, pa.string()),
        "time_s": pa.array(np.asarray(times, np.float64)),
        "value": pa.array(np.asarray(values, np.float64)),
    })  # fmt: skip
    return RunWindow(run_id, site, started.timestamp(), rate, table)


def _wall(started: datetime, seconds: float) -> datetime:
    try:
        return started + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if seconds > 0 else datetime.min.replace(tzinfo=UTC)
