"""Run artifacts: summary.json, timeseries.parquet and overview.png, written atomically."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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


def write_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """``write(staging)`` fills a fresh folder beside ``out_dir``; its files then replace
    those of ``out_dir``. On any failure nothing is left behind."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".twin-", dir=out_dir.parent))
    try:
        write(staging)
        out_dir.mkdir(exist_ok=True)
        for item in staging.iterdir():
            item.replace(out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_run(out_dir: Path, summary: dict[str, Any], result: Result) -> None:
    """summary.json, timeseries.parquet and overview.png into ``out_dir``, atomically."""
    from services.cli.plots import overview_png

    def write(staging: Path) -> None:
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        table = timeseries_table(result)
        pq.write_table(table, staging / "timeseries.parquet")
        overview_png(table, summary, staging / "overview.png")

    write_atomically(out_dir, write)
