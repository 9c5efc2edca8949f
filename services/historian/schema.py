"""The history tables as the historian writes them, derived from the quantities contract.

``site_series`` holds one column per stored quantity (``twin_core.contract.HISTORY``); the
SQL migrations create them, and ``tests/test_contract.py`` checks that they match. This
module imports no JAX and nothing of the writer, so the read side (the History API) can
use it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from twin_core import contract

# The time origin of every series: time = EPOCH + simulated seconds (rollup buckets too).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

KEY_COLUMNS = ("run_id", "step", "time")
KEY_TYPES = ("text", "int8", "timestamptz")
# The value columns of site_series: the stored quantities, by their contract names.
METRICS: tuple[str, ...] = tuple(q.name for q in contract.HISTORY)
SITE_COLUMNS = (*KEY_COLUMNS, *METRICS)
SITE_TYPES = (*KEY_TYPES, *(contract.COPY_TYPES[q.sql] for q in contract.HISTORY if q.sql))
# The quantities summarised in site_series_1m / _1h.
ROLLUP_METRICS: tuple[str, ...] = contract.ROLLUP
CDU_COLUMNS = (*KEY_COLUMNS, "cdu", "tcs_supply_c", "heat_liquid_w")
CDU_TYPES = (*KEY_TYPES, "int4", "float8", "float8")
RACK_COLUMNS = (*KEY_COLUMNS, "quantity", "values")
RACK_TYPES = (*KEY_TYPES, "text", "float4[]")

# target table -> (staging table, columns, binary COPY types, conflict key)
TABLES: dict[str, tuple[str, Sequence[str], Sequence[str], str]] = {
    "site_series": ("stage_site_series", SITE_COLUMNS, SITE_TYPES, "run_id, step, time"),
    "cdu_series": ("stage_cdu_series", CDU_COLUMNS, CDU_TYPES, "run_id, step, cdu, time"),
    "rack_arrays": ("stage_rack_arrays", RACK_COLUMNS, RACK_TYPES, "run_id, step, quantity, time"),
}
