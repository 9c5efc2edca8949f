"""Chaos for the twin's infrastructure: its nats-server and its PostgreSQL, under a live
paced run of the small site, with the launcher supervising (as `twin up` does).

Faults, one after the other on one twin: SIGKILL of each (the supervisor restarts it),
SIGSTOP/SIGCONT of each for 5 s; then, on a second run, both stopped together for 60 s.
After each, the run must move again and the historian must catch up; at the end the run
completes and ``site_series`` holds every step 0..N-1 exactly once. Prints the table
fault -> recovery time -> lost -> duplicated (see the README).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from pg_rows import one
from started_twin import database_url

from services.launcher import LocalTwin, free_addresses
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]

SMALL = Path(__file__).parent / "sites" / "small.yaml"
STEPS = 3000  # at 20 steps/s: longer than the faults take; sped up once they are done
RECOVERY_S = 90.0  # a fault not recovered from in this long fails the test (no hang)


@dataclass
class Outcome:
    fault: str
    recovery_s: float
    first: int  # the steps [first, last] ran during the fault and its recovery
    last: int


class Run:
    def __init__(self, twin: LocalTwin, run_id: str, stub) -> None:
        self.twin, self.run_id, self.stub = twin, run_id, stub

    def step(self) -> int | None:
        try:
            request = twin_pb2.GetSnapshotRequest(run_id=self.run_id)
            return self.stub.GetSnapshot(request, timeout=5).snapshot.step
        except grpc.RpcError:
            return None

    def stored_through(self, step: int) -> bool:
        """The historian holds every step 0..step (None while the database is away)."""
        try:
            with psycopg.connect(database_url(self.twin), connect_timeout=2) as conn:
                stored = one(
                    conn.execute(
                        "SELECT count(DISTINCT step) FROM site_series"
                        " WHERE run_id = %s AND step <= %s",
                        (self.run_id, step),
                    )
                )[0]
        except psycopg.Error:
            return False
        return stored == step + 1

    def recover(self, fault: str, first: int, since: float, limit_s: float = RECOVERY_S) -> Outcome:
        """Wait until the run moved past where it was when the fault ended and the history
        holds every step up to there; the time from ``since`` (the end of the fault)."""
        deadline = since + limit_s
        at_end = None
        while at_end is None:
            at_end = self.step()
            assert time.monotonic() < deadline, f"{fault}: the twin does not answer"
            time.sleep(0.05)
        while (now := self.step()) is None or now <= at_end or not self.stored_through(at_end):
            assert time.monotonic() < deadline, f"{fault}: no recovery in {limit_s:g} s"
            time.sleep(0.05)
        return Outcome(fault, time.monotonic() - since, first, now)


@pytest.fixture(scope="module")
def twin_events():
    events: list[str] = []
    with LocalTwin(
        "small", free_addresses(), ready_timeout_s=180, supervise=True, on_event=events.append
    ) as twin:
        events.clear()
        yield twin, events


def _start(twin: LocalTwin, stub) -> Run:
    spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=1.0, horizon_s=STEPS)
    start = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(real_time_factor=20))
    run = Run(twin, stub.Start(start, timeout=300).run_id, stub)
    deadline = time.monotonic() + 120
    while not run.stored_through(20):  # running and stored
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.1)
    return run


def _finish(run: Run, outcomes: list[Outcome]) -> None:
    """Run the rest as fast as possible; print the table; every step stored exactly once."""
    run.stub.SetSpeed(
        twin_pb2.SetSpeedRequest(
            run_id=run.run_id, speed=clock_pb2.Speed(as_fast_as_possible=True)
        ),
        timeout=30,
    )
    # Generous: what is checked is that nothing is lost, not how fast a busy machine steps.
    deadline = time.monotonic() + 300
    while (run.step() or 0) < STEPS or not run.stored_through(STEPS - 1):
        assert time.monotonic() < deadline, f"the run did not complete: {run.step()}"
        time.sleep(0.2)
    with psycopg.connect(database_url(run.twin)) as conn:
        steps = [r[0] for r in conn.execute(
            "SELECT step FROM site_series WHERE run_id = %s ORDER BY step", (run.run_id,)
        )]  # fmt: skip
    counts: dict[int, int] = {}
    for step in steps:
        counts[step] = counts.get(step, 0) + 1
    lines = [f"{'fault':<28} {'recovery (s)':>12} {'lost':>5} {'duplicated':>10}"]
    for o in outcomes:
        window = range(o.first, o.last + 1)
        lost = sum(1 for s in window if s not in counts)
        duplicated = sum(counts.get(s, 0) - 1 for s in window if counts.get(s, 0) > 1)
        lines.append(f"{o.fault:<28} {o.recovery_s:>12.1f} {lost:>5} {duplicated:>10}")
    print("\n" + "\n".join(lines))
    assert steps == list(range(STEPS))  # every step stored, exactly once


def _kill(run: Run, name: str, pid: int) -> Outcome:
    first = run.step() or 0
    os.kill(pid, signal.SIGKILL)
    return run.recover(f"kill -9 {name}", first, time.monotonic())


def _pause(run: Run, name: str, pid: int, seconds: float, limit: float = RECOVERY_S) -> Outcome:
    first = run.step() or 0
    os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(pid, signal.SIGCONT)
    return run.recover(f"SIGSTOP {name} {seconds:g} s", first, time.monotonic(), limit)


def test_short_nats_and_postgres_faults_under_a_live_run(twin_events) -> None:
    """Kill -9 (the supervisor restarts it) and a 5 s SIGSTOP of each."""
    twin, events = twin_events
    with grpc.insecure_channel(twin.addresses["twin"]) as channel:
        run = _start(twin, twin_pb2_grpc.TwinServiceStub(channel))
        outcomes = [
            _kill(run, "nats-server", twin.nats.pid),
            _pause(run, "nats-server", twin.nats.pid, 5),
            _kill(run, "PostgreSQL", twin.postgres.pid),
            _pause(run, "PostgreSQL", twin.postgres.pid, 5),
        ]
        _finish(run, outcomes)
    print("supervisor:\n  " + "\n  ".join(events))
    assert [e.split(";")[0] for e in events] == [
        "nats-server died (exit status -9)",
        "PostgreSQL died",
    ]


def test_long_nats_and_postgres_outage_under_a_live_run(twin_events) -> None:
    twin, _ = twin_events
    with grpc.insecure_channel(twin.addresses["twin"]) as channel:
        run = _start(twin, twin_pb2_grpc.TwinServiceStub(channel))
        # Both away over the same 60 s: a long outage of each in one wait.
        first = run.step() or 0
        pids = {"nats-server": twin.nats.pid, "PostgreSQL": twin.postgres.pid}
        for pid in pids.values():
            os.kill(pid, signal.SIGSTOP)
        time.sleep(60)
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)
        outcome = run.recover("SIGSTOP nats-server + PostgreSQL 60 s", first, time.monotonic())
        _finish(run, [outcome])
