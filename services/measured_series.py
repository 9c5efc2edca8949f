"""Measured series for ``twin calibrate`` from a file: a recording of ``twin gateway
record`` (one row per measurement: entity, quantity, time_s, value) or a table with a
``time_s`` column and one column per model quantity (Parquet or CSV).

Both become ``Measured``: the mean of each quantity over consecutive intervals of
``step_s`` from the first time in the file (a table's ``time_s`` is the start of the
interval its values stand for). A recording's entities are combined into the site
quantities the model computes (``RECORDING``): the meter is ``facility_w``, the racks
summed are ``it_w``, the CDUs' supply temperatures averaged are ``tcs_supply_mean_c``...
A sum needs every unit of the site in each interval (an interval missing one is a gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from twin_core.calibrate import MEASURABLE, Measured
from twin_core.site import Site


class MeasuredFileError(ValueError):
    """A measured file that cannot be used; one line naming the file and the problem."""


@dataclass(frozen=True)
class Rule:
    """Recording rows of ``quantity`` whose entity is ``entity`` (or starts with it, when
    it ends in ``/``) make the model quantity ``target`` by ``how`` over the entities."""

    quantity: str
    entity: str
    target: str
    how: str  # "mean" or "sum"
    units: str | None = None  # for a sum: the site's count of these units (Site attr)


RECORDING: tuple[Rule, ...] = (
    Rule("meter_power_w", "meter", "facility_w", "sum"),
    Rule("rack_power_w", "rack/", "it_w", "sum", "rack_count"),
    Rule("supply_temperature_c", "cdu/", "tcs_supply_mean_c", "mean"),
    Rule("supply_temperature_c", "facility", "facility_supply_c", "mean"),
    Rule("return_temperature_c", "facility", "facility_return_c", "mean"),
    Rule("gpu_temperature_c", "gpu/", "gpu_temp_mean_c", "mean"),
    Rule("gpu_temperature_c", "rack/", "gpu_temp_mean_c", "mean"),  # a rack's GPUs (twin plant)
    Rule("equipment_power_w", "rack/", "gpu_power_w", "sum", "rack_count"),  # rack/<s>/<c>/gpus
    Rule("equipment_power_w", "dry_cooler/", "dry_cooler_fans_w", "sum", "dry_coolers"),
    Rule("equipment_power_w", "chiller/", "chillers_w", "sum", "chillers"),
    Rule("fan_speed", "dry_cooler/", "fan_speed", "mean"),
    Rule("battery_power_w", "battery", "battery_w", "sum"),
    Rule("battery_soc", "battery", "soc", "mean"),
    Rule("ambient_temperature_c", "weather", "ambient_c", "mean"),
    Rule("relative_humidity", "weather", "rh", "mean"),
)
RECORDING_COLUMNS = ("entity", "quantity", "time_s", "value")


def _units(site: Site, name: str) -> int:
    if name == "rack_count":
        return site.rack_count
    if name == "dry_coolers":
        return site.cooling.dry_coolers.units
    return site.cooling.chillers.units


def read_table(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() == ".csv":
            return pacsv.read_csv(path)
        return pq.read_table(path)
    except FileNotFoundError:
        raise MeasuredFileError(f"--measured {path}: no such file") from None
    except (OSError, pa.ArrowException) as exc:
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        raise MeasuredFileError(f"--measured {path}: not a {kind} file ({exc})") from None


def _numbers(table: pa.Table, column: str, where: str) -> np.ndarray:
    try:
        values = np.asarray(table.column(column).to_numpy(zero_copy_only=False), np.float64)
    except (TypeError, ValueError, pa.ArrowException):
        raise MeasuredFileError(f"{where}: column {column!r} is not numeric") from None
    return values


def _bins(times: np.ndarray, t0: float, step_s: float) -> np.ndarray:
    return np.floor((times - t0) / step_s + 1e-9).astype(np.int64)


def _bin_means(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    sums = np.bincount(index[ok], values[ok], minlength=n)
    counts = np.bincount(index[ok], minlength=n)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _axis(
    times: np.ndarray, step_s: float | None, where: str, aligned: bool = False
) -> tuple[float, float, int]:
    """(start, step, intervals) of the time axis; ``aligned``: the start on a multiple of
    the step (a recording's samples fall anywhere in their interval)."""
    finite = times[np.isfinite(times)]
    if finite.size == 0:
        raise MeasuredFileError(f"{where}: no rows with a time")
    t0 = float(finite.min())
    if step_s is None:
        steps = np.diff(np.unique(finite))
        if steps.size == 0:
            raise MeasuredFileError(f"{where}: one time only; give --resolution for the interval")
        step_s = float(np.median(steps))
    if aligned:
        t0 = math.floor(t0 / step_s) * step_s
    n = int(_bins(np.array([finite.max()]), t0, step_s)[0]) + 1
    return t0, step_s, n


def read_measured(
    path: Path, site: Site, step_s: float | None = None
) -> tuple[Measured, list[str]]:
    """The measured series in ``path`` at ``step_s`` (default: the file's own time step),
    and notes on what was left out."""
    measured, notes, _ = read_measured_at(path, site, step_s)
    return measured, notes


def read_measured_at(
    path: Path, site: Site, step_s: float | None = None
) -> tuple[Measured, list[str], float]:
    """``read_measured`` and where the series start on the site's clock: a table's first
    ``time_s`` when its times count from the site's start, else 0."""
    table = read_table(path)
    if "time_s" not in table.column_names:
        raise MeasuredFileError(f"--measured {path}: no time_s column")
    if all(c in table.column_names for c in RECORDING_COLUMNS):
        return (*from_recording(table, f"--measured {path}", site, step_s), 0.0)
    measured = _from_columns(table, path, step_s)
    return measured, [], 0.0 if measured.start_s else _first_time(table, path)


def _first_time(table: pa.Table, path: Path) -> float:
    times = _numbers(table, "time_s", f"--measured {path}")
    return float(np.nanmin(times))


def _from_columns(table: pa.Table, path: Path, step_s: float | None) -> Measured:
    names = [c for c in table.column_names if c != "time_s"]
    if not names:
        raise MeasuredFileError(f"--measured {path}: no quantity columns besides time_s")
    for name in names:
        if name not in MEASURABLE:
            raise MeasuredFileError(
                f"--measured {path}: column {name!r} is not a model quantity "
                "(e.g. it_w, facility_w, tcs_supply_mean_c, ambient_c, rh)"
            )
    where = f"--measured {path}"
    times = _numbers(table, "time_s", where)
    t0, step, n = _axis(times, step_s, where)
    ok = np.isfinite(times)
    index = _bins(times[ok], t0, step)
    series = {q: _bin_means(index, _numbers(table, q, where)[ok], n) for q in names}
    # Unix seconds (after 1973) date the window; small times count from the site's start.
    return Measured(step, series, start_s=t0 if t0 > 1e8 else 0.0)


def from_recording(
    table: pa.Table, where: str, site: Site, step_s: float | None
) -> tuple[Measured, list[str]]:
    """Rows in the recording columns (a file, or a run's measurements in the database:
    ``where`` names it in errors) as ``Measured`` at ``step_s`` (default 60 s)."""
    times = _numbers(table, "time_s", where)
    values = _numbers(table, "value", where)
    entities = np.asarray(table.column("entity").to_pylist(), dtype=object)
    quantities = np.asarray(table.column("quantity").to_pylist(), dtype=object)
    t0, step, n = _axis(times, step_s if step_s is not None else 60.0, where, aligned=True)
    index = _bins(np.where(np.isfinite(times), times, t0), t0, step)
    used = np.zeros(len(times), bool)
    series: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for rule in RECORDING:
        if rule.target in series:
            continue
        if rule.entity.endswith("/"):
            match = np.char.startswith(entities.astype(str), rule.entity)
        else:
            match = entities == rule.entity
        rows = match & (quantities == rule.quantity) & np.isfinite(times)
        if not rows.any():
            continue
        used |= rows
        names = sorted(set(entities[rows]))
        per_entity = np.stack(
            [
                _bin_means(index[rows & (entities == e)], values[rows & (entities == e)], n)
                for e in names
            ]
        )
        if rule.how == "mean":
            counts = np.sum(np.isfinite(per_entity), axis=0)
            total = np.nansum(per_entity, axis=0)
            series[rule.target] = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
            continue
        expected = _units(site, rule.units) if rule.units else len(names)
        if len(names) != expected:
            notes.append(
                f"{rule.quantity} of {len(names)} of the site's {expected} "
                f"{rule.entity.rstrip('/')} units: {rule.target} not fitted"
            )
            continue
        series[rule.target] = per_entity.sum(axis=0)  # NaN where any unit is missing
    left = sorted({f"{e} {q}" for e, q in zip(entities[~used], quantities[~used], strict=True)})
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        notes.append(f"not used (no model quantity): {shown}")
    if not series:
        raise MeasuredFileError(f"{where}: no measurement maps to a model quantity")
    return Measured(step, series, start_s=t0), notes


@dataclass(frozen=True)
class RunMeasured:
    """A run's measured window as ``Measured`` (``start_s``: its Unix start, for
    provenance), with ``offset_s``: where the window starts in the run's simulated time
    (the site's time in a live run), and the mapping's notes."""

    measured: Measured
    offset_s: float
    notes: list[str]
    run_id: str
    site_id: str


def measured_from_run(
    url: str,
    run_id: str,
    site: Site,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    step_s: float | None = None,
    where: str = "--run",
) -> RunMeasured:
    """The measurements of ``run_id`` (in [start_s, end_s) s of the run) mapped to model
    quantities as a recording is. Raises ``QueryError``/``RunNotFound`` (historian),
    ``MeasuredFileError`` and ``psycopg.Error``."""
    from services.historian.measured_window import read_run_window

    window = read_run_window(url, run_id, start_s, end_s)
    measured, notes = from_recording(window.table, f"{where} {run_id}", site, step_s)
    offset = measured.start_s  # the first interval's start on the run's clock
    unix = window.started_at_s + offset / window.rate
    measured = Measured(measured.step_s, measured.series, start_s=unix)
    return RunMeasured(measured, offset, notes, run_id, window.site_id)
