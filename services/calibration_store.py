"""Where calibrations live: in memory while the service runs (bounded), and in the
history database (``calibrations``, migration 0009) when one is configured, with the run
they were fitted on. ``twin calibrate --run`` stores through the same ``save``."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import psycopg
from google.protobuf import json_format

from twin.calibration.v1 import calibration_pb2 as pb

log = logging.getLogger(__name__)

STATE_NAMES = {
    pb.CALIBRATION_STATE_RUNNING: "running",
    pb.CALIBRATION_STATE_DONE: "done",
    pb.CALIBRATION_STATE_FAILED: "failed",
}
_UPSERT = """
INSERT INTO calibrations (calibration_id, site_id, run_id, state, created_at, wall_s,
    calibration, result)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (calibration_id) DO UPDATE SET state = EXCLUDED.state, wall_s = EXCLUDED.wall_s,
    calibration = EXCLUDED.calibration, result = EXCLUDED.result
"""


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=5)


def save(url: str, c: pb.Calibration) -> None:
    """Insert or update ``c`` in the ``calibrations`` table."""
    with _connect(url) as conn:
        conn.execute(
            _UPSERT,
            (
                c.calibration_id,
                c.site_id,
                c.run_id or None,
                STATE_NAMES.get(c.state, "running"),
                c.created_at.ToDatetime().isoformat() + "+00:00",
                c.wall_s,
                c.SerializeToString(),
                json_format.MessageToJson(c, indent=None),
            ),
        )


def load(url: str, calibration_id: str) -> pb.Calibration | None:
    with _connect(url) as conn:
        row = conn.execute(
            "SELECT calibration FROM calibrations WHERE calibration_id = %s", (calibration_id,)
        ).fetchone()
    return pb.Calibration.FromString(bytes(row[0])) if row else None


def summary(c: pb.Calibration) -> pb.Calibration:
    """``c`` without its site file (what a list answers)."""
    out = pb.Calibration()
    out.CopyFrom(c)
    out.ClearField("site_yaml")
    return out


def list_stored(url: str, run_id: str, limit: int) -> list[pb.Calibration]:
    where, params = ("WHERE run_id = %s ", [run_id]) if run_id else ("", [])
    with _connect(url) as conn:
        rows = conn.execute(
            "SELECT calibration FROM calibrations " + where + "ORDER BY created_at DESC LIMIT %s",
            [*params, limit],
        ).fetchall()
    return [summary(pb.Calibration.FromString(bytes(r[0]))) for r in rows]


class CalibrationStore:
    """Calibrations by id; ``keep`` most recent in memory, all of them in the database."""

    def __init__(self, database_url: str | None = None, keep: int = 256) -> None:
        self.database_url = database_url
        self.keep = keep
        self._items: OrderedDict[str, pb.Calibration] = OrderedDict()

    async def put(self, c: pb.Calibration) -> None:
        self._items[c.calibration_id] = c
        self._items.move_to_end(c.calibration_id)
        while len(self._items) > self.keep:
            self._items.popitem(last=False)
        if self.database_url:
            try:
                await asyncio.to_thread(save, self.database_url, c)
            except psycopg.Error as exc:  # it still answers from memory
                log.warning("calibration %s not stored in history: %s", c.calibration_id, exc)

    async def get(self, calibration_id: str) -> pb.Calibration | None:
        if calibration_id in self._items:
            return self._items[calibration_id]
        if not self.database_url:
            return None
        return await asyncio.to_thread(load, self.database_url, calibration_id)

    async def list(self, run_id: str, limit: int) -> list[pb.Calibration]:
        found = {k: summary(c) for k, c in self._items.items() if not run_id or c.run_id == run_id}
        if self.database_url:
            try:
                stored = await asyncio.to_thread(list_stored, self.database_url, run_id, limit)
                for c in stored:
                    found.setdefault(c.calibration_id, c)
            except psycopg.Error as exc:
                log.warning("calibrations in history not listed: %s", exc)
        ordered = sorted(found.values(), key=lambda c: c.created_at.ToNanoseconds(), reverse=True)
        return ordered[:limit]
