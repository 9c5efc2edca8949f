"""A calibration as its ``twin.calibration.v1.Calibration`` message: what the service
streams and stores, and what ``twin calibrate --run`` stores."""

from __future__ import annotations

import math
import uuid

from twin.calibration.v1 import calibration_pb2 as pb
from twin_core.calibrate import Calibration
from twin_core.fit_stats import FitStats


def _stats(s: FitStats) -> pb.FitStats:
    return pb.FitStats(n=s.n, cv_rmse_pct=s.cv_rmse_pct, nmbe_pct=s.nmbe_pct, r2=s.r2)


def new_record(site_id: str, run_id: str, offset_s: float) -> pb.Calibration:
    """A running calibration with a fresh id, created now."""
    c = pb.Calibration(
        calibration_id=str(uuid.uuid4()),
        site_id=site_id,
        run_id=run_id,
        state=pb.CALIBRATION_STATE_RUNNING,
        window_offset_s=offset_s,
    )
    c.created_at.GetCurrentTime()
    return c


def fill(c: pb.Calibration, result: Calibration, site_yaml: str) -> None:
    """The result fields of ``c`` from the fit; ``c`` is then done."""
    m = result.measured
    c.window_start_s, c.step_s, c.duration_s = m.start_s, m.step_s, m.duration_s
    c.stats_s = result.stats_s
    for e in result.estimates.values():
        ok = math.isfinite(e.std_error)
        c.estimates.add(
            path=e.path, start=e.start, value=e.value, std_error=e.std_error if ok else 0.0,
            identifiable=ok, lower=e.lower, upper=e.upper, at_bound=e.at_bound,
            step_correction=e.step_correction,
        )  # fmt: skip
    for q, after in result.after.items():
        c.fits.add(quantity=q, before=_stats(result.before[q]), after=_stats(after))
    c.warnings.extend(result.warnings)
    c.iterations, c.converged = result.iterations, result.converged
    c.cost_before, c.cost_after = result.cost_before, result.cost_after
    c.site_yaml = site_yaml
    c.state = pb.CALIBRATION_STATE_DONE
