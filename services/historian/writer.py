"""The historian writer: a site's JetStream state stream -> the history tables.

One durable pull consumer (explicit ack) on ``twin.<site>.*.state``. Messages are grouped
by ``(run_id, step)``; a step is written once its four domain states (compute, cooling,
power, energy) have all arrived:

- ``site_series``: one row per step, combined from the four states;
- ``cdu_series``: one row per CDU (cooling ``tcs_supply_c``, compute ``heat_liquid_w``);
- ``rack_arrays``: compute ``rack_ac_w`` and power ``rack_cap_w``, every ``rack_every``
  steps only.

Writes: psycopg 3 binary COPY straight into the tables, in a savepoint; if any row of the
batch is stored already (a redelivery), the savepoint is rolled back and the batch goes
through TEMP staging tables and ``INSERT ... SELECT ... ON CONFLICT`` into the targets
(filling NULLs only, see below). One transaction per batch; the batch's messages are acked
only after the commit, so a crash between commit and ack makes JetStream redeliver messages
whose rows are already stored, and the conflict clause makes that a no-op.
A historian killed mid-run leaves its fetched, unacked messages with the durable until the
ack wait ends; its successor meanwhile sees only the other domains of those steps, writes
them partial after ``incomplete_max_age_s``, and completes them when the redelivery comes.

Rollups: every batch also refreshes the rollups (``site_series_1m`` / ``_1h``) over the time
range it touched, per run, so a rollup query agrees with the raw rows as soon as the batch is
stored. Plain PostgreSQL: ``refresh_site_rollups(run, from, to)`` inside the batch's
transaction. TimescaleDB: ``CALL refresh_continuous_aggregate`` right after the commit (it is
refused inside a transaction block) over whole buckets; a crash before it runs leaves the
buckets stale until the redelivered batch refreshes them again (re-refreshing is idempotent).

Batches close at ``batch_max_msgs`` messages of complete steps, ``batch_max_s`` after the
first complete step, or when the consumer is idle. Memory is bounded: at most
``max_unacked`` messages are held (the fetch size is what is left of that budget, and the
durable's ``max_ack_pending`` is the same number). If the budget is full of incomplete steps
(a domain that stopped publishing), or a step stays incomplete ``incomplete_max_age_s``, the
oldest steps are written with what they have (NULL columns for missing domains); a domain
message for that step arriving later fills the columns still NULL (the conflict clause of
``site_series`` and ``cdu_series`` merges; it never overwrites a stored value).

Database outage: a failed write closes the connection, nothing is acked, and the same batch
is retried with exponential backoff (forever, or until cancelled); meanwhile at most the
next batch is fetched (writes are one at a time) and JetStream keeps the rest. If the outage
outlasts the consumer's ack wait, the held messages are redelivered; the writes are
idempotent, so a duplicate costs a no-op row.

Run records and refused messages: the consumer also reads ``twin.<site>.events``, where
the clock publishes each run's START (spec, dt, horizon, pace, wall-clock start) and STOP
(how it ended, wall-clock end, last step); they become the run's ``runs`` row, written at
once, before the states that follow them in the stream. A state message is stored only for
a known run (a START seen, or a ``runs`` row from before) with a step in the run's range
(``0 <= step``, below the horizon, not after the run's end) and finite values; anything
else (an empty run id, a forged or foreign run, a garbled payload) is ``term()``ed, never
redelivered, counted in ``stats.rejected`` by reason and logged.

Time column: ``epoch + time_s`` where ``epoch`` is fixed (``WriterConfig.epoch``, default
2000-01-01T00:00Z, the origin the rollup buckets use). A run's ``started_at`` is not carried
by the state messages, and the key must be a pure function of (run_id, step) for the writes
to stay idempotent, so the historian does not look it up; a query that wants wall-clock time
adds ``runs.started_at - epoch``.

Backend: plain PostgreSQL. COPY does not work on the PGlite socket server that the tests use
for TimescaleDB, so this writer is not run against it; on a real TimescaleDB server the same
statements apply unchanged (hypertables accept COPY and ON CONFLICT on their unique keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import LiteralString, cast

import psycopg
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.historian import events
from services.historian.schema import (
    CDU_COLUMNS,
    EPOCH,
    METRICS,
    TABLES,
)
from services.messages import STATE_TYPES, StateMessage, state_problem
from services.monitor.wire import is_deviation
from services.runtime import bus, metrics
from services.runtime.codec import DecodeStats, PayloadError, reject
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.twin.v1 import clock_pb2
from twin_core import contract

log = logging.getLogger(__name__)

DOMAINS = contract.DOMAINS


def _fill_nulls(table: str, columns: Sequence[str]) -> str:
    """The conflict action of a row combined from several domains: a stored row keeps its
    values and only gains the ones it lacks. A step written partial (a domain's messages
    still held by a killed historian, redelivered only after the ack wait) is completed when
    they arrive; a plain redelivery changes nothing (the WHERE skips the update)."""
    fill = ", ".join(f"{c} = COALESCE({table}.{c}, EXCLUDED.{c})" for c in columns)
    gains = " OR ".join(f"({table}.{c} IS NULL AND EXCLUDED.{c} IS NOT NULL)" for c in columns)
    return f"DO UPDATE SET {fill} WHERE {gains}"


CONFLICT_ACTIONS = {
    "site_series": _fill_nulls("site_series", METRICS),
    "cdu_series": _fill_nulls("cdu_series", CDU_COLUMNS[4:]),
    "rack_arrays": "DO NOTHING",  # one domain per row: a redelivery is the same row
}


ROLLUP_WIDTHS = (("site_series_1m", timedelta(minutes=1)), ("site_series_1h", timedelta(hours=1)))


def _floor(t: datetime, width: timedelta, epoch: datetime = EPOCH) -> datetime:
    return t - (t - epoch) % width


def rollup_refreshes(
    timescale: bool, spans: dict[str, tuple[datetime, datetime]]
) -> list[tuple[LiteralString, tuple]]:
    """The statements (SQL, parameters) that bring the rollups up to date for rows stored at
    ``first <= time <= last`` of each run (``spans``: run_id -> (first, last)). Plain
    PostgreSQL: one ``refresh_site_rollups`` per run (run them in the writing transaction).
    TimescaleDB: one ``refresh_continuous_aggregate`` per aggregate over the whole buckets
    covering every run's span (run them outside any transaction block, after the commit)."""
    if not spans:
        return []
    if not timescale:
        return [
            ("SELECT refresh_site_rollups(%s, %s, %s)", (run, first, last + timedelta(0, 0, 1)))
            for run, (first, last) in sorted(spans.items())
        ]
    first = min(a for a, _ in spans.values())
    last = max(b for _, b in spans.values())
    return [
        (
            "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
            (view, _floor(first, width), _floor(last, width) + width),
        )
        for view, width in ROLLUP_WIDTHS
    ]


@dataclass(frozen=True)
class WriterConfig:
    site: str
    database_url: str
    nats_url: str = bus.DEFAULT_NATS_URL
    durable: str = bus.HISTORIAN_DURABLE
    rack_every: int = 60  # rack_arrays every this many steps
    batch_max_msgs: int = 2000  # close a batch at this many messages of complete steps ...
    batch_max_s: float = 0.2  # ... or this long after its first complete step
    max_unacked: int = 8000  # messages held (fetched, not yet acked), at most
    fetch_batch: int = 1000  # one pull request, at most
    fetch_timeout_s: float = 0.2
    ack_wait_s: float = 60.0  # the durable's ack wait: longer than a typical outage
    incomplete_max_age_s: float = 30.0  # write a step with missing domains after this
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    epoch: datetime = EPOCH


@dataclass
class _Step:
    first_seen: float
    states: dict[str, StateMessage] = field(default_factory=dict)
    msgs: list[Msg] = field(default_factory=list)


@dataclass
class WriterStats:
    batches: int = 0
    steps: int = 0
    partial_steps: int = 0
    acked: int = 0
    db_failures: int = 0
    bad_messages: int = 0  # refused messages, all reasons (``rejected`` has them by reason)
    events: int = 0  # deviations stored in ``events``
    rejected: DecodeStats = field(default_factory=DecodeStats)
    pending: int = 0  # the durable's messages not delivered yet (at the last fetch)
    newest_committed_s: float | None = None  # stream time of the newest message written


@dataclass
class _Run:
    """What the writer knows of a run: enough to check a state message's step."""

    horizon_steps: int | None  # None: open-ended
    last_step: int | None = None  # the last interval, once the run has ended


MAX_TIME_S = 1e10  # simulated seconds (~300 years): beyond, a timestamp would overflow
INT4_MAX = 2**31 - 1
INTEGER_QUANTITIES = tuple(q.name for q in contract.HISTORY if q.sql == "integer")

RUN_ENDS = {
    clock_pb2.RUN_END_COMPLETED: "completed",
    clock_pb2.RUN_END_STOPPED: "stopped",
    clock_pb2.RUN_END_FAILED: "failed",
}


def _q(name: str) -> str:
    return '"values"' if name == "values" else name


class HistorianWriter:
    """Consume one site's state stream into PostgreSQL. ``await writer.run()`` until
    cancelled; declare the stream first (``bus.declare_stream``); the writer declares its
    durable consumer itself."""

    def __init__(self, js: JetStreamContext | None, config: WriterConfig) -> None:
        # js None: a writer that only builds rows (``rows``) and cannot ``run``.
        self.js = js
        self.config = config
        self.stats = WriterStats()
        self._steps: dict[tuple[str, int], _Step] = {}
        self._held = 0  # messages in self._steps
        self._conn: psycopg.AsyncConnection | None = None
        self._prefix = f"twin.{config.site}."
        self._events = bus.events_subject(config.site)
        self._runs: dict[str, _Run] = {}  # known runs: a START seen, or a runs row
        self._timescale = False  # the server has the timescaledb extension (set on connect)

    # -- consuming ---------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        assert self.js is not None, "a writer without JetStream cannot consume"
        await bus.declare_consumer(
            self.js,
            cfg.site,
            cfg.durable,
            filter_subjects=[f"twin.{cfg.site}.*.state", self._events],
            ack_wait_s=cfg.ack_wait_s,
            max_ack_pending=cfg.max_unacked,
        )
        await self._load_runs()
        sub = await bus.pull_subscription(self.js, cfg.site, cfg.durable)
        # One batch is written while the next is fetched and decoded: the database and
        # this process work at the same time. Writes stay one at a time, in order.
        inflight: asyncio.Task | None = None
        try:
            batch_started: float | None = None
            while True:
                room = cfg.max_unacked - self._held
                msgs: list[Msg] = []
                if room > 0:
                    msgs = await bus.fetch(sub, min(cfg.fetch_batch, room), cfg.fetch_timeout_s)
                    self.stats.pending = bus.pending_after(msgs)
                    for msg in msgs:
                        await self._add_safely(msg)
                ready = self._complete()
                ready_msgs = sum(len(self._steps[k].msgs) for k in ready)
                now = time.monotonic()
                if ready and batch_started is None:
                    batch_started = now
                due = (
                    ready_msgs >= cfg.batch_max_msgs
                    or (batch_started is not None and now - batch_started >= cfg.batch_max_s)
                    or (ready and not msgs)  # idle: write what is complete
                )
                stale = self._stale(now, full=room <= 0 and not ready)
                if (due and ready) or stale:
                    batch = self._take(ready, cfg.batch_max_msgs) if due else []
                    if inflight is not None:
                        # Python 3.11's wait_for (inside nats-py's fetch) can swallow a
                        # cancel that lands as a message arrives; honour it here rather
                        # than wait on a write that may never finish.
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            raise asyncio.CancelledError
                        await inflight  # re-raises what the previous write raised
                    inflight = asyncio.create_task(self._write(self._detach(batch + stale)))
                    batch_started = time.monotonic() if len(batch) < len(ready) else None
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()  # not acked: JetStream redelivers its messages
                await asyncio.gather(inflight, return_exceptions=True)
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()
            await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    async def _refuse(self, msg: Msg, reason: str, detail: str) -> None:
        """Count and log a message that will never be stored, and ``term()`` it."""
        self.stats.bad_messages += 1
        reject(self.stats.rejected, reason, msg.subject, detail)
        with contextlib.suppress(Exception):  # NATS away: it comes back and is refused again
            await msg.term()

    async def _add_safely(self, msg: Msg) -> None:
        """``_add``; a message that makes it fail is refused, never the writer's end."""
        try:
            await self._add(msg)
        except (asyncio.CancelledError, psycopg.Error):
            raise
        except Exception as exc:
            await self._refuse(msg, "message.failed", repr(exc)[:200])

    async def _add(self, msg: Msg) -> None:
        if msg.subject == self._events:
            await self._on_event(msg)
            return
        domain = msg.subject[len(self._prefix) :].split(".", 1)[0]
        message_type = STATE_TYPES.get(domain) if msg.subject.startswith(self._prefix) else None
        if message_type is None:  # not a state message of this site: nothing to store
            await msg.ack()
            return
        try:
            state = message_type.FromString(msg.data)
        except Exception as exc:  # protobuf DecodeError and friends
            reason = str(PayloadError(msg.subject, message_type.__name__, str(exc)))
            await self._refuse(msg, f"{message_type.__name__}.undecodable", reason)
            return
        problem = state_problem(state) or self._out_of_run(state)
        if problem is not None:
            await self._refuse(msg, f"{message_type.__name__}.invalid", problem)
            return
        if state.step < 0:  # a domain's "ready" message before the first interval
            await msg.ack()
            return
        key = (state.run_id, int(state.step))
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = _Step(time.monotonic())
        # A redelivery replaces the state; both deliveries are acked with the step.
        step.states[domain] = state
        step.msgs.append(msg)
        self._held += 1

    def _out_of_run(self, state: StateMessage) -> str | None:
        """Why a state's run or step is not one the clock ran, or a value does not fit its
        column (None when all is well): such a batch could never be written."""
        if not 0.0 <= state.time_s <= MAX_TIME_S:
            return f"time_s: {state.time_s} outside [0, {MAX_TIME_S:g}]"
        for name in INTEGER_QUANTITIES:
            value = state.quantities.get(name, 0.0)
            if abs(value) > INT4_MAX:
                return f"quantities.{name}: {value:g} does not fit an integer column"
        run = self._runs.get(state.run_id)
        if run is None:
            return f"run_id: {state.run_id[:40]!r} is not a run the clock started"
        if run.horizon_steps is not None and state.step >= run.horizon_steps:
            return f"step: {state.step} beyond the run's horizon ({run.horizon_steps} steps)"
        if run.last_step is not None and state.step > run.last_step:
            return f"step: {state.step} after the run's end (step {run.last_step})"
        return None

    # -- run records -------------------------------------------------------------------

    async def _load_runs(self) -> None:
        """Runs recorded before this writer started (their START may be acked already)."""
        rows = await self._with_retry(
            "SELECT run_id, dt_s, horizon_s, last_step FROM runs WHERE site_id = %s",
            (self.config.site,),
            fetch=True,
        )
        for run_id, dt_s, horizon_s, last_step in rows:
            self._runs[run_id] = _Run(_horizon_steps(horizon_s, dt_s), last_step)

    async def _on_event(self, msg: Msg) -> None:
        """START and STOP of a run: its runs row, written before the states after it;
        a deviation (type header, services/monitor/wire.py): its ``events`` row."""
        if is_deviation(msg.headers):
            await self._record_deviation(msg)
            return
        try:
            clock = clock_pb2.Clock.FromString(msg.data)
        except DecodeError:  # another kind of event: not the historian's
            await msg.ack()
            return
        command = clock.command
        if command not in (clock_pb2.CLOCK_COMMAND_START, clock_pb2.CLOCK_COMMAND_STOP):
            await msg.ack()
            return
        if not clock.run_id or len(clock.run_id) > 128 or not clock.run_id.isprintable():
            await self._refuse(
                msg, "Clock.invalid", f"run_id: {clock.run_id[:40]!r} is not a run id"
            )
            return
        if command == clock_pb2.CLOCK_COMMAND_START:
            spec = clock.spec
            if not (math.isfinite(spec.dt_s) and spec.dt_s >= 0) or not (
                math.isfinite(spec.horizon_s) and spec.horizon_s >= 0
            ):
                detail = f"spec: dt_s {spec.dt_s} or horizon_s {spec.horizon_s} is not valid"
                await self._refuse(msg, "Clock.invalid", detail)
                return
            await self._record_start(clock)
        elif clock.run_id in self._runs:
            await self._record_end(clock)
        else:
            await self._refuse(msg, "Clock.invalid", f"STOP of unknown run {clock.run_id[:40]!r}")
            return
        await msg.ack()

    async def _record_deviation(self, msg: Msg) -> None:
        try:
            row = events.deviation_row(msg.data)
        except Exception as exc:  # undecodable, or a field that cannot be stored
            await self._refuse(msg, "Deviation.invalid", str(exc)[:200])
            return
        if row.run_id not in self._runs:
            detail = f"run_id: {row.run_id[:40]!r} is not a run the clock started"
            await self._refuse(msg, "Deviation.invalid", detail)
            return
        await self._with_retry(
            events.INSERT, (row.event_id, row.run_id, row.time, row.kind, row.body)
        )
        self.stats.events += 1
        await msg.ack()

    async def _record_start(self, clock: clock_pb2.Clock) -> None:
        spec = clock.spec
        dt_s = spec.dt_s or 1.0
        scenario = spec.scenario_name or "(inline site)"
        started = _wall(clock.wall_time_s) or datetime.now(UTC)
        spec_json = json_format.MessageToJson(spec, preserving_proto_field_name=True)
        await self._with_retry(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s,"
            " real_time_factor, status, spec, spec_pb)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'running', %s::jsonb, %s)"
            " ON CONFLICT (run_id) DO NOTHING",
            (
                clock.run_id,
                self.config.site,
                scenario,
                started,
                dt_s,
                spec.horizon_s,
                clock.real_time_factor or None,
                spec_json,
                spec.SerializeToString(deterministic=True),
            ),
        )
        self._runs[clock.run_id] = _Run(_horizon_steps(spec.horizon_s, dt_s))

    async def _record_end(self, clock: clock_pb2.Clock) -> None:
        status = RUN_ENDS.get(clock.end, "stopped")
        # A clock that restarted ends the run it lost without knowing its last step (-1).
        last_step = clock.step if clock.step >= 0 else None
        await self._with_retry(
            "UPDATE runs SET status = %s, ended_at = %s, last_step = %s, end_reason = %s"
            " WHERE run_id = %s",
            (
                status,
                _wall(clock.wall_time_s) or datetime.now(UTC),
                last_step,
                clock.reason or None,
                clock.run_id,
            ),
        )
        self._runs[clock.run_id].last_step = last_step

    async def _with_retry(
        self, sql: LiteralString, params: tuple, fetch: bool = False
    ) -> list[tuple]:
        """One statement on its own connection (the batch writer holds the other), retried
        with backoff through a database outage."""
        delay = self.config.backoff_initial_s
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.config.database_url,
                    prepare_threshold=None,
                    connect_timeout=5,
                    autocommit=True,
                ) as conn:
                    try:
                        cur = await conn.execute(sql, params)
                        return await cur.fetchall() if fetch else []
                    except psycopg.OperationalError:
                        raise
                    except psycopg.Error as exc:  # refused for what it holds: no retry
                        raise ValueError(f"database refused the run record: {exc}") from None
            except psycopg.OperationalError as exc:  # the database is away: retry
                self.stats.db_failures += 1
                log.warning("historian run record failed, retrying in %.2f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.config.backoff_max_s)

    def _complete(self) -> list[tuple[str, int]]:
        return [k for k, s in self._steps.items() if len(s.states) == len(DOMAINS)]

    def _take(self, keys: list[tuple[str, int]], max_msgs: int) -> list[tuple[str, int]]:
        """The first of ``keys`` (oldest first) up to ``max_msgs`` messages, at least one."""
        taken, n = [], 0
        for key in keys:
            n += len(self._steps[key].msgs)
            if taken and n > max_msgs:
                break
            taken.append(key)
        return taken

    def _stale(self, now: float, full: bool) -> list[tuple[str, int]]:
        """Incomplete steps to write as they are: too old, or (budget full of incomplete
        steps) the oldest quarter of them."""
        incomplete = [(s.first_seen, k) for k, s in self._steps.items() if len(s.states) < 4]
        old = [k for t, k in incomplete if now - t >= self.config.incomplete_max_age_s]
        if full and not old:
            incomplete.sort()
            old = [k for _, k in incomplete[: max(1, len(incomplete) // 4)]]
        return old

    # -- writing -----------------------------------------------------------------------

    def _detach(self, keys: list[tuple[str, int]]) -> list[_Step]:
        """Take these steps out of the pending ones: a message for one of them arriving
        while it is written starts a new step (stored by the NULL-filling upsert), so no
        state is acked without having been written. They stay counted in ``_held`` until
        acked."""
        return [self._steps.pop(k) for k in keys]

    async def _write(self, steps: list[_Step]) -> None:
        rows = self.rows([s.states for s in steps])
        started = time.perf_counter()
        delay = self.config.backoff_initial_s
        while True:
            try:
                await self._copy(rows)
                break
            except psycopg.Error as exc:
                self.stats.db_failures += 1
                log.warning("historian write failed, retrying in %.2f s: %s", delay, exc)
                await self.close()
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.config.backoff_max_s)
        msgs = [m for s in steps for m in s.msgs]
        await self._ack(msgs)
        metrics.historian_batch_seconds.labels("states").observe(time.perf_counter() - started)
        self.stats.newest_committed_s = bus.stream_time_s(msgs) or self.stats.newest_committed_s
        for s in steps:
            self._held -= len(s.msgs)
            if len(s.states) < len(DOMAINS):
                self.stats.partial_steps += 1
        self.stats.batches += 1
        self.stats.steps += len(steps)

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
            # Autocommit: batches open their own transaction blocks, and TimescaleDB's
            # refresh_continuous_aggregate must run outside one.
            conn = await psycopg.AsyncConnection.connect(
                self.config.database_url,
                prepare_threshold=None,
                connect_timeout=5,
                autocommit=True,
            )
            for target, (stage, *_rest) in TABLES.items():
                # Names of the schema's constant table, never of a message: a trusted literal.
                create = (
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage}"
                    f" (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                await conn.execute(cast(LiteralString, create))
            cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
            self._timescale = await cur.fetchone() is not None
            self._conn = conn
        return self._conn

    async def _copy(self, rows: dict[str, list[tuple]]) -> None:
        conn = await self._connect()
        spans: dict[str, tuple[datetime, datetime]] = {}
        for run_id, _step, t, *_values in rows["site_series"]:
            first, last = spans.get(run_id, (t, t))
            spans[run_id] = (min(first, t), max(last, t))
        refreshes = rollup_refreshes(self._timescale, spans)
        try:
            async with conn.transaction():
                try:
                    # Fast path: COPY straight into the tables, in a savepoint. A row that
                    # is stored already (a redelivery, a partial step) fails it whole, and
                    # the batch goes through staging tables and the upserts instead.
                    async with conn.transaction():
                        await self._copy_rows(conn, rows, staged=False)
                except psycopg.errors.UniqueViolation:
                    await self._copy_rows(conn, rows, staged=True)
                if not self._timescale:  # same transaction: rows and rollups together
                    for statement, params in refreshes:
                        await conn.execute(statement, params)
            if self._timescale:
                for statement, params in refreshes:
                    await conn.execute(statement, params)
        except BaseException:  # the connection state is unknown: start afresh next time
            await self.close()
            raise

    async def _copy_rows(
        self, conn: psycopg.AsyncConnection, rows: dict[str, list[tuple]], staged: bool
    ) -> None:
        # The statements are built from the schema's constant tables, columns and conflict
        # actions, never from a message's content: trusted literals.
        for target, (stage, columns, types, key) in TABLES.items():
            if not rows[target]:
                continue
            names = ", ".join(_q(c) for c in columns)
            async with conn.cursor() as cur:
                into = stage if staged else target
                copy_sql = f"COPY {into} ({names}) FROM STDIN (FORMAT BINARY)"
                async with cur.copy(cast(LiteralString, copy_sql)) as copy:
                    copy.set_types(list(types))
                    for row in rows[target]:
                        await copy.write_row(row)
                if staged:
                    upsert = (
                        f"INSERT INTO {target} ({names}) SELECT {names} FROM {stage}"
                        f" ON CONFLICT ({key}) {CONFLICT_ACTIONS[target]}"
                    )
                    await cur.execute(cast(LiteralString, upsert))

    def rows(self, steps: Iterable[Mapping[str, StateMessage]]) -> dict[str, list[tuple]]:
        """Rows for the three tables from each step's states (domain -> message)."""
        out: dict[str, list[tuple]] = {t: [] for t in TABLES}
        for states in steps:
            power = states.get("power")
            # Each domain's message is of its STATE_TYPES type (decoded as such).
            cooling = cast("cooling_pb2.CoolingState | None", states.get("cooling"))
            compute = cast("compute_pb2.ComputeState | None", states.get("compute"))
            energy = states.get("energy")
            first = next(s for s in (power, cooling, compute, energy) if s is not None)
            run_id, step = first.run_id, int(first.step)
            t = self.config.epoch + timedelta(seconds=first.time_s)

            # Each quantity from the map of the domain that computes it (NULL when that
            # domain's message is missing or lacks it).
            values = {
                q.name: _quantity(states.get(q.domain), q.name, q.sql) for q in contract.HISTORY
            }
            out["site_series"].append((run_id, step, t, *(values[m] for m in METRICS)))
            supply = list(cooling.tcs_supply_c) if cooling is not None else []
            heat = list(compute.heat_liquid_w) if compute is not None else []
            for cdu in range(max(len(supply), len(heat))):
                out["cdu_series"].append(
                    (
                        run_id,
                        step,
                        t,
                        cdu,
                        supply[cdu] if cdu < len(supply) else None,
                        heat[cdu] if cdu < len(heat) else None,
                    )
                )
            if self.config.rack_every > 0 and step % self.config.rack_every == 0:
                for quantity, msg, name in (
                    ("rack_ac_w", compute, "rack_ac_w"),
                    ("rack_cap_w", power, "rack_cap_w"),
                ):
                    if msg is not None and msg.HasField(name):
                        values = list(getattr(msg, name).values)
                        out["rack_arrays"].append((run_id, step, t, quantity, values))
        return out


def _quantity(message: StateMessage | None, name: str, sql: str | None) -> float | int | None:
    if message is None or name not in message.quantities:
        return None
    value = message.quantities[name]
    return round(value) if sql == "integer" else value


def _horizon_steps(horizon_s: float, dt_s: float) -> int | None:
    return round(horizon_s / dt_s) if horizon_s > 0 and dt_s > 0 else None


def _wall(seconds: float) -> datetime | None:
    """A message's wall-clock time, or None when it has none (or a nonsensical one)."""
    return datetime.fromtimestamp(seconds, UTC) if 0 < seconds < 1e11 else None


# ------------------------------------------------------------------------------ service


async def run(config: WriterConfig) -> None:
    """The historian as a service: connect to NATS, declare the site stream, consume until
    cancelled (or SIGINT/SIGTERM through ``Service``)."""
    from services.historian.measurements import MeasurementConfig, MeasurementWriter
    from services.runtime.config import RuntimeConfig
    from services.runtime.service import Service

    async def setup(svc: Service) -> None:
        await bus.declare_stream(svc.js, config.site)
        writer = HistorianWriter(svc.js, config)
        svc.create_task(writer.run(), name="historian-writer")
        # The site's telemetry -> measurements, on its own durable (measurements.py).
        measured = MeasurementWriter(svc.js, MeasurementConfig(config.site, config.database_url))
        svc.create_task(measured.run(), name="historian-measurements")

    runtime = RuntimeConfig.from_env(site=config.site, nats_url=config.nats_url)
    async with Service("historian", setup, config=runtime) as svc:
        await svc.wait()
