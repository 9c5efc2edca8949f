"""Events other than the run records: the residual monitor's deviations, stored in the
``events`` table (one row per event, keyed by its id, so a redelivery is a no-op) and
listed by the History API (``ListEvents``).

Time column: ``EPOCH + time_s`` (the run's simulated seconds), as the series, so an event
sits on the same axis as the samples around it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from google.protobuf import json_format

from services.historian.queries import QueryError, RunNotFound, check_id
from services.historian.schema import EPOCH
from services.monitor.wire import KINDS
from twin.twin.v1 import deviation_pb2

MAX_TIME_S = 1e10  # simulated seconds, as the state messages (writer.MAX_TIME_S)
MAX_ID = 256


@dataclass(frozen=True)
class EventRow:
    event_id: str
    run_id: str
    time: datetime
    kind: str
    body: str  # JSON


def deviation_row(data: bytes) -> EventRow:
    """The ``events`` row of a published deviation; ValueError naming the field when it
    cannot be stored (DecodeError, a subclass of Exception, when it is not a Deviation)."""
    event = deviation_pb2.Deviation.FromString(data)
    for name in ("event_id", "run_id", "entity"):
        value = getattr(event, name)
        if not value or len(value) > MAX_ID or not value.isprintable():
            raise ValueError(f"Deviation.{name}: {value[:40]!r} is not an id")
    kind = KINDS.get(event.status)
    if kind is None:
        raise ValueError(f"Deviation.status: {event.status} is neither raised nor cleared")
    if not 0.0 <= event.time_s <= MAX_TIME_S:
        raise ValueError(f"Deviation.time_s: {event.time_s} outside [0, {MAX_TIME_S:g}]")
    for field, value in event.ListFields():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"Deviation.{field.name}: not a finite number")
    body = json_format.MessageToDict(event, preserving_proto_field_name=True)
    time = EPOCH + timedelta(seconds=event.time_s)
    return EventRow(event.event_id, event.run_id, time, kind, json.dumps(body))


INSERT = (
    "INSERT INTO events (event_id, run_id, time, kind, body)"
    " VALUES (%s, %s, %s, %s, %s::jsonb) ON CONFLICT (event_id) DO NOTHING"
)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    kind: str
    time_s: float
    body: dict


async def list_events(
    conn: psycopg.AsyncConnection, run_id: str, kinds: list[str]
) -> list[StoredEvent]:
    """One run's events in time order (then by id), of ``kinds`` when given."""
    if not run_id:
        raise QueryError("run_id", "required")
    check_id("run_id", run_id)
    for i, kind in enumerate(kinds):
        if not kind or len(kind) > MAX_ID or not kind.isprintable():
            raise QueryError(f"kinds.{i}", f"{kind[:40]!r} is not an event kind")
    cur = await conn.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,))
    if await cur.fetchone() is None:
        raise RunNotFound(f"run_id: run {run_id!r} not found")
    # An empty kinds list selects all: cardinality(%s) = 0.
    cur = await conn.execute(
        "SELECT event_id, kind, time, body FROM events WHERE run_id = %s"
        " AND (cardinality(%s::text[]) = 0 OR kind = ANY(%s::text[]))"
        " ORDER BY time, event_id",
        (run_id, list(kinds), list(kinds)),
    )
    return [
        StoredEvent(event_id, kind, (time - EPOCH).total_seconds(), body)
        for event_id, kind, time, body in await cur.fetchall()
    ]


def deviation_of(stored: StoredEvent) -> deviation_pb2.Deviation | None:
    """The Deviation a ``deviation.*`` event stores (None for other kinds)."""
    if not stored.kind.startswith("deviation."):
        return None
    return json_format.ParseDict(stored.body, deviation_pb2.Deviation(), ignore_unknown_fields=True)
