"""The historian's measured side: ``telemetry.<site>.>`` -> the ``measurements`` table.

A second durable pull consumer (``historian-measurements``, explicit ack) on the site
stream, filtered to the site's telemetry, beside the state consumer of ``writer.py``: the
two never wait on each other, and the measured side has no steps to assemble. Each fetch
is one batch: every ``MeasurementBatch`` is decoded and checked, its measurements are
binary-COPYed into a TEMP staging table and moved into ``measurements`` with ``INSERT ...
SELECT ... ON CONFLICT DO NOTHING`` in one transaction; the messages are acked only after
the commit, so a redelivery (a crash between commit and ack) stores nothing twice. The
gateway re-sends a held value with its original source time at every tick; the key makes
that a no-op as well.

Key: ``(site_id, entity, quantity, source, time)``, ``time`` being the measurement's own
source time (wall clock, UTC): ``MeasurementBatch`` carries no twin step, so measurements
are not keyed by tick. ``run_id`` is the run in progress at that time (the latest run of
the site started at or before it and not ended before it, from ``runs``) or NULL; it is a
function of the row and the run records, so a redelivery computes the same.

Refused, counted in ``stats.rejected`` by reason and logged: a payload that does not
decode or names another site (the message is ``term()``ed, never redelivered); within a
decoded batch, a measurement with no or a malformed entity, an unknown quantity, a time
outside 1970..5138, or a value that is not finite (that measurement only: the rest of the
batch is stored).

Rollups: ``measurements_1m`` over the written time range (plain PostgreSQL:
``refresh_measurement_rollups`` in the batch's transaction; TimescaleDB: ``CALL
refresh_continuous_aggregate`` right after the commit, over whole minutes).

A failed write closes the connection and is retried with backoff; nothing is acked
meanwhile, and JetStream keeps the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import LiteralString

import psycopg
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.historian.schema import (
    MEASUREMENT_COLUMNS,
    MEASUREMENT_KEY,
    MEASUREMENT_ROLLUP,
    MEASUREMENT_TYPES,
    QUANTITY_NAMES,
)
from services.runtime import bus, metrics
from services.runtime.codec import DecodeStats, reject
from twin.telemetry.v1 import telemetry_pb2

log = logging.getLogger(__name__)

STAGE = "stage_measurements"
MAX_ENTITY_CHARS = 128
MAX_TIME_S = 1e11  # s since 1970: beyond, a timestamp overflows
ROLLUP_WIDTH = timedelta(minutes=1)

# The run in progress at a measurement's time, from the historian's run records.
_RUN_AT = (
    "(SELECT r.run_id FROM runs r WHERE r.site_id = s.site_id AND r.started_at <= s.time"
    " AND (r.ended_at IS NULL OR r.ended_at >= s.time) ORDER BY r.started_at DESC LIMIT 1)"
)


@dataclass(frozen=True)
class MeasurementConfig:
    site: str
    database_url: str
    durable: str = bus.MEASUREMENTS_DURABLE
    fetch_batch: int = 1000  # messages per fetch, and per write at most
    # Measurements per write at most (whole messages; one bigger message alone): a
    # gateway's batch holds a measurement per entity (~6,000 a tick at Fairwater), and a
    # backlog of them in one transaction would show nothing until it ends.
    write_rows: int = 50_000
    fetch_timeout_s: float = 0.2
    ack_wait_s: float = 60.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0


@dataclass
class MeasurementStats:
    batches: int = 0  # committed writes
    messages: int = 0  # MeasurementBatch messages stored (and acked)
    measurements: int = 0  # measurements offered to the table (repeats included)
    acked: int = 0
    db_failures: int = 0
    bad_messages: int = 0  # messages refused whole
    bad_measurements: int = 0  # measurements refused within a stored message
    rejected: DecodeStats = field(default_factory=DecodeStats)
    pending: int = 0  # the durable's messages not delivered yet (at the last fetch)
    newest_committed_s: float | None = None  # stream time of the newest message written


Row = tuple[str, str, str, str, datetime, float]


class MeasurementWriter:
    """Consume one site's telemetry into ``measurements``. ``await writer.run()`` until
    cancelled; declare the stream first (``bus.declare_stream``)."""

    def __init__(self, js: JetStreamContext, config: MeasurementConfig) -> None:
        self.js = js
        self.config = config
        self.stats = MeasurementStats()
        self._conn: psycopg.AsyncConnection | None = None
        self._timescale = False

    async def run(self) -> None:
        cfg = self.config
        await bus.declare_consumer(
            self.js,
            cfg.site,
            cfg.durable,
            filter_subjects=[bus.telemetry_subject(cfg.site)],
            ack_wait_s=cfg.ack_wait_s,
            max_ack_pending=cfg.fetch_batch,
        )
        sub = await bus.pull_subscription(self.js, cfg.site, cfg.durable)
        try:
            while True:
                msgs = await bus.fetch(sub, cfg.fetch_batch, cfg.fetch_timeout_s)
                self.stats.pending = bus.pending_after(msgs)
                rows: list[Row] = []
                stored: list[Msg] = []
                for msg in msgs:
                    decoded = await self._rows(msg)
                    if decoded is None:
                        continue
                    if stored and len(rows) + len(decoded) > cfg.write_rows:
                        await self._store(rows, stored)
                        rows, stored = [], []
                    rows.extend(decoded)
                    stored.append(msg)
                if stored:
                    await self._store(rows, stored)
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()
            await self.close()

    async def _store(self, rows: list[Row], msgs: list[Msg]) -> None:
        started = time.perf_counter()
        await self._write(rows)
        await self._ack(msgs)
        self.stats.messages += len(msgs)
        seconds = time.perf_counter() - started
        metrics.historian_batch_seconds.labels("measurements").observe(seconds)
        self.stats.newest_committed_s = bus.stream_time_s(msgs) or self.stats.newest_committed_s

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    # -- checking ----------------------------------------------------------------------

    async def _refuse(self, msg: Msg, reason: str, detail: str) -> None:
        self.stats.bad_messages += 1
        reject(self.stats.rejected, reason, msg.subject, detail)
        with contextlib.suppress(Exception):  # NATS away: it comes back and is refused again
            await msg.term()

    async def _rows(self, msg: Msg) -> list[Row] | None:
        """The rows of a message's valid measurements; None when it is refused whole."""
        site = self.config.site
        try:
            batch = telemetry_pb2.MeasurementBatch.FromString(msg.data)
        except Exception as exc:  # protobuf DecodeError and friends
            await self._refuse(msg, "MeasurementBatch.undecodable", str(exc)[:200])
            return None
        if batch.site_id not in ("", site):
            detail = f"site_id: {batch.site_id[:40]!r} is not {site!r}"
            await self._refuse(msg, "MeasurementBatch.invalid", detail)
            return None
        # ``telemetry.<site>.<source>``: the batch's source, else the subject's last token.
        source = batch.source or msg.subject.rsplit(".", 1)[-1]
        if len(source) > MAX_ENTITY_CHARS or not source.isprintable():
            await self._refuse(msg, "MeasurementBatch.invalid", f"source: {source[:40]!r}")
            return None
        rows: list[Row] = []
        for i, m in enumerate(batch.measurements):
            problem = measurement_problem(m, site)
            if problem is not None:
                self.stats.bad_measurements += 1
                reject(self.stats.rejected, "Measurement.invalid", msg.subject, f"{i}: {problem}")
                continue
            t = datetime.fromtimestamp(m.time_s, UTC)
            rows.append((site, source, m.entity, QUANTITY_NAMES[m.quantity], t, m.value))
        return rows

    # -- writing -----------------------------------------------------------------------

    async def _write(self, rows: list[Row]) -> None:
        delay = self.config.backoff_initial_s
        while True:
            try:
                await self._copy(rows)
                break
            except psycopg.Error as exc:
                self.stats.db_failures += 1
                log.warning("measurement write failed, retrying in %.2f s: %s", delay, exc)
                await self.close()
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.config.backoff_max_s)
        self.stats.batches += 1
        self.stats.measurements += len(rows)

    async def _ack(self, msgs: Iterable[Msg]) -> None:
        """Ack after commit. An ack lost to a NATS outage only means a redelivery."""
        for msg in msgs:
            try:
                await msg.ack()
                self.stats.acked += 1
            except Exception as exc:  # NATS away: JetStream redelivers
                log.warning("ack failed (message will be redelivered): %r", exc)

    async def _connect(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            # Autocommit: each batch opens its own transaction block, and TimescaleDB's
            # refresh_continuous_aggregate must run outside one.
            conn = await psycopg.AsyncConnection.connect(
                self.config.database_url,
                prepare_threshold=None,
                connect_timeout=5,
                autocommit=True,
            )
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {STAGE}"
                " (LIKE measurements INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
            self._timescale = await cur.fetchone() is not None
            self._conn = conn
        return self._conn

    async def _copy(self, rows: list[Row]) -> None:
        conn = await self._connect()
        names = ", ".join(MEASUREMENT_COLUMNS)
        picked = ", ".join(f"s.{c}" for c in MEASUREMENT_COLUMNS)
        try:
            async with conn.transaction():
                if rows:
                    async with conn.cursor() as cur:
                        copy_sql = f"COPY {STAGE} ({names}) FROM STDIN (FORMAT BINARY)"
                        async with cur.copy(copy_sql) as copy:
                            copy.set_types(list(MEASUREMENT_TYPES))
                            for row in rows:
                                await copy.write_row(row)
                        await cur.execute(
                            f"INSERT INTO measurements ({names}, run_id)"
                            f" SELECT {picked}, {_RUN_AT} FROM {STAGE} s"
                            f" ON CONFLICT ({MEASUREMENT_KEY}) DO NOTHING"
                        )
                if not self._timescale:  # same transaction: rows and rollup together
                    for statement, params in measurement_refreshes(False, self.config.site, rows):
                        await conn.execute(statement, params)
            if self._timescale:
                for statement, params in measurement_refreshes(True, self.config.site, rows):
                    await conn.execute(statement, params)
        except BaseException:  # the connection state is unknown: start afresh next time
            await self.close()
            raise


def measurement_problem(m: telemetry_pb2.Measurement, site: str) -> str | None:
    """Why a measurement cannot be stored (naming the field), or None."""
    if m.site_id not in ("", site):
        return f"site_id: {m.site_id[:40]!r} is not {site!r}"
    if not m.entity or len(m.entity) > MAX_ENTITY_CHARS or not m.entity.isprintable():
        return f"entity: {m.entity[:40]!r} is not an entity path"
    if m.quantity not in QUANTITY_NAMES:
        return f"quantity: unknown value {m.quantity}"
    if not (math.isfinite(m.time_s) and 0 < m.time_s < MAX_TIME_S):
        return f"time_s: {m.time_s} is not a time"
    if not math.isfinite(m.value):
        return f"value: {m.value} is not finite"
    return None


def _floor(t: datetime) -> datetime:
    return t - (t - datetime(2000, 1, 1, tzinfo=UTC)) % ROLLUP_WIDTH


def measurement_refreshes(
    timescale: bool, site: str, rows: list[Row]
) -> list[tuple[LiteralString, tuple[object, ...]]]:
    """The statements (SQL, parameters) that bring ``measurements_1m`` up to date for the
    time range of ``rows``: plain PostgreSQL in the writing transaction, TimescaleDB after
    the commit (over whole minutes)."""
    if not rows:
        return []
    first = min(r[4] for r in rows)
    last = max(r[4] for r in rows)
    if not timescale:
        return [
            (
                "SELECT refresh_measurement_rollups(%s, %s, %s)",
                (site, first, last + timedelta(microseconds=1)),
            )
        ]
    return [
        (
            "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
            (MEASUREMENT_ROLLUP, _floor(first), _floor(last) + ROLLUP_WIDTH),
        )
    ]
