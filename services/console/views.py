"""Protobuf messages as the JSON the console's pages read: plain names, finite numbers
(NaN and infinities become null: JSON has no such numbers), enums as short lower-case
words."""

from __future__ import annotations

import math
from typing import Any

from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import deviation_pb2, snapshot_pb2
from twin.whatif.v1 import whatif_pb2


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def enum_word(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def run_state(value: int) -> str:
    return enum_word(snapshot_pb2.RunState, value, "RUN_STATE_")


def deviation_view(d: deviation_pb2.Deviation) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "entity": d.entity,
        "quantity": enum_word(telemetry_pb2.Quantity, d.quantity, "QUANTITY_"),
        "cause": enum_word(deviation_pb2.DeviationCause, d.cause, "DEVIATION_CAUSE_"),
        "departure": finite(d.departure),
        "departure_sigmas": finite(d.departure_sigmas),
        "unit": d.unit,
        "time_s": finite(d.time_s),
        "reason": d.reason,
        "suspect": d.suspect,
    }


def snapshot_view(s: snapshot_pb2.SiteSnapshot) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "site_id": s.site_id,
        "step": s.step,
        "time_s": finite(s.time_s),
        "state": run_state(s.state),
        "reason": s.reason,
        "real_time_factor": finite(s.real_time_factor),
        "quantities": {k: finite(v) for k, v in sorted(s.quantities.items())},
        "totals": {k: finite(v) for k, v in sorted(s.totals.items())},
        "halls": [
            {"name": h.name, "tcs_supply_c": [finite(t) for t in h.tcs_supply_c]} for h in s.halls
        ],
        "deviations": [deviation_view(d) for d in s.deviations],
    }


def study_state(value: int) -> str:
    return enum_word(whatif_pb2.StudyState, value, "STUDY_STATE_")


def study_summary_view(s: whatif_pb2.StudySummary) -> dict[str, Any]:
    return {
        "study_id": s.study_id,
        "name": s.name,
        "site_id": s.site_id,
        "state": study_state(s.state),
        "variants": s.variants,
        "created_at": s.created_at.ToJsonString() if s.HasField("created_at") else None,
        "wall_s": finite(s.wall_s),
    }


def study_view(s: whatif_pb2.Study) -> dict[str, Any]:
    return {
        "study_id": s.study_id,
        "name": s.name,
        "site_id": s.site_id,
        "state": study_state(s.state),
        "duration_s": finite(s.duration_s),
        "dt_s": finite(s.dt_s),
        "wall_s": finite(s.wall_s),
        "error": s.error,
        "kpi_units": dict(s.kpi_units),
        "study_yaml": s.study_yaml,
        "variants": [
            {
                "name": v.name,
                "overrides": [{"path": o.path, "value": o.value} for o in v.overrides],
                "racks": v.racks,
                "gpus": v.gpus,
                "kpis": {k: finite(x) for k, x in sorted(v.kpis.items())},
                "deltas": {k: finite(x) for k, x in sorted(v.deltas.items())},
                "passed": v.passed,
                "constraints": [
                    {
                        "name": c.name,
                        "value": finite(c.value),
                        "limit": finite(c.limit),
                        "passed": c.passed,
                    }
                    for c in v.constraints
                ],
                "series": {x.name: [finite(y) for y in x.values] for x in v.series},
            }
            for v in s.variants
        ],
    }
