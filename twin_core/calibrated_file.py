"""A calibrated site file: the base site document with the calibrated values set and a
provenance comment (the data window, the estimates with their standard errors, the
statistics before and after, the date). Text only; the caller writes it."""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

import yaml

from twin_core.calibrate import Calibration
from twin_core.site import Site, set_path, site_files


def _g(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.4g}"


def _window(c: Calibration) -> str:
    m = c.measured
    hours = m.duration_s / 3600.0
    if m.start_s:
        start = dt.datetime.fromtimestamp(m.start_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return f"{start}, {hours:g} h at {m.step_s:g} s steps"
    return f"{hours:g} h at {m.step_s:g} s steps from the site's start"


def provenance(c: Calibration, *, base: str, date: dt.date) -> list[str]:
    """The comment lines (without ``#``) that say where the calibrated values came from."""
    p = len(c.estimates)
    lines = [
        f"Calibrated from {base} on {date.isoformat()} (twin calibrate).",
        f"Data window: {_window(c)}.",
        "Estimates (value ± standard error; the base value):",
    ]
    if c.reference_dt is not None:
        lines[-1] = (
            f"Estimates, corrected to a {c.reference_dt:g} s step (value ± standard error; "
            "the base value):"
        )
    for path, e in c.estimates.items():
        lines.append(f"  {path}: {e.value:.6g} ± {_g(e.std_error)} (base {e.start:.6g})")
    lines.append(
        f"Fit per quantity at {c.stats_s:g} s, ASHRAE Guideline 14 with n - p, p = {p} "
        "(before -> after):"
    )
    for q, after in c.after.items():
        before = c.before[q]
        lines.append(
            f"  {q}: CV(RMSE) {_g(before.cv_rmse_pct)} -> {_g(after.cv_rmse_pct)} %, "
            f"NMBE {_g(before.nmbe_pct)} -> {_g(after.nmbe_pct)} %, "
            f"R2 {_g(before.r2)} -> {_g(after.r2)} (n = {after.n})"
        )
    if c.biases:
        lines.append("Sensor biases are the sensors', not the site's: not set below.")
    lines += [f"Warning: {w}" for w in c.warnings]
    lines.append(f"Every other number is {base}'s: its source comments are there.")
    return lines


def calibrated_site_text(
    doc: dict[str, Any],
    c: Calibration,
    site: Site,
    *,
    base: str,
    out_dir: Path,
    date: dt.date,
) -> str:
    """``doc`` (the base site file's document, ``site`` as loaded from it) with the
    calibrated overrides, relative file names rewritten to resolve from ``out_dir``, and
    the provenance comment on top."""
    doc = copy.deepcopy(doc)
    for path, value in c.overrides.items():
        set_path(doc, path, value)
    for path, name in site_files(site):
        if not os.path.isabs(name):
            moved = os.path.relpath(site.base_dir / name, out_dir.resolve())
            set_path(doc, path, moved)
    header = "".join(f"# {line}\n" for line in provenance(c, base=base, date=date))
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)
