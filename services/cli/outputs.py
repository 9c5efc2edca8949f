"""Run artifacts: summary.json, timeseries.parquet and overview.png (and, with
--power-quality, meter.parquet, spectrum.parquet and spectrum.png), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.cli.extras import installed, need
from services.cli.files import write_all_atomic
from twin_core.contract import QUANTITIES, QUANTITY
from twin_core.rollout import Result

# Series whose per-interval maximum is worth keeping next to the mean.
MAX_COLUMNS = ("facility_w", "gpu_temp_max_c", "tcs_supply_max_c", "ramp_w_per_s")


def timeseries_table(result: Result) -> pa.Table:
    """Interval means of every contract quantity (and maxima of a few), by their contract
    names; each column's unit is in its field metadata."""
    fields = [pa.field("time_h", pa.float64(), metadata={"unit": "h"})]
    arrays = [np.asarray(result.time_h, dtype=np.float64)]
    for q in QUANTITIES:
        fields.append(pa.field(q.name, pa.float64(), metadata={"unit": q.unit}))
        arrays.append(np.asarray(result.means[q.name], dtype=np.float64))
    for name in MAX_COLUMNS:
        fields.append(pa.field(f"{name}_max", pa.float64(), metadata={"unit": QUANTITY[name].unit}))
        arrays.append(np.asarray(result.maxes[name], dtype=np.float64))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_run(out_dir: Path, summary: dict[str, Any], result: Result) -> None:
    """summary.json, timeseries.parquet and overview.png (with the plot extra) into
    ``out_dir``, atomically."""
    table = timeseries_table(result)
    files: dict[Path, Any] = {
        out_dir / "summary.json": json.dumps(summary, indent=2, allow_nan=False) + "\n",
        out_dir / "timeseries.parquet": lambda f: pq.write_table(table, f),
    }
    if installed("matplotlib"):
        from services.cli.plots import overview_png

        # matplotlib writes PNG to a file object (savefig.format's default)
        files[out_dir / "overview.png"] = lambda f: overview_png(table, summary, f)
    if result.meter_trace is not None:  # --power-quality
        need("matplotlib", "plot", "--power-quality")
        from services.cli import power_quality

        files |= power_quality.files(result.meter_trace, result.dt, summary, out_dir)
    write_all_atomic(files, make_dirs=True)
