"""Chaos under a live run: the small site's services as processes (real nats-server,
PostgreSQL, gRPC), one paced run at dt 10 s, and faults injected one after the other while
it runs: SIGKILL and restart, and SIGSTOP/SIGCONT, of each domain service and of the
historian for 5 s, the twin process (the clock) paused for 5 s; cooling paused and power
killed for 60 s, and compute, energy, the historian and the clock paused together for 60 s;
then, in a second run, the twin process killed and restarted.

The first run must complete with every step stored exactly once with the values the
domains published, which equal the monolithic rollout; the second must end FAILED with a
reason, both in the twin's snapshot and in the historian's run record. Every wait is
bounded. The test prints the table fault -> recovery time -> lost -> duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import grpc
import nats
import numpy as np
import psycopg
import pytest
from conftest import SMALL
from pg_rows import one
from started_twin import database_url, nats_url

from services.launcher import LocalTwin, free_addresses, health
from twin.power.v1 import power_pb2
from twin.twin.v1 import clock_pb2, snapshot_pb2, twin_pb2, twin_pb2_grpc
from twin_core.rollout import simulate
from twin_core.site import load_site

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos")]
SITE = "small"
DT = 10.0
STEPS = 2400  # long enough to outlast the faults at the pace below, then run out fast
PACE = 40.0  # simulated s per wall s: 4 steps/s while faults are injected
SHORT, LONG = 5.0, 60.0
WAIT_S = 120.0  # any single wait of the test


@dataclass
class Fault:
    name: str
    recovery_s: float = float("nan")


_STUBS: dict[str, twin_pb2_grpc.TwinServiceStub] = {}


def stub(twin: LocalTwin) -> twin_pb2_grpc.TwinServiceStub:
    address = twin.addresses["twin"]
    if address not in _STUBS:  # one channel: it reconnects by itself after a restart
        _STUBS[address] = twin_pb2_grpc.TwinServiceStub(grpc.insecure_channel(address))
    return _STUBS[address]


def snapshot(twin: LocalTwin, run_id: str) -> snapshot_pb2.SiteSnapshot:
    request = twin_pb2.GetSnapshotRequest(run_id=run_id)
    return stub(twin).GetSnapshot(request, timeout=10).snapshot


def start(twin: LocalTwin, horizon_steps: int) -> str:
    spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=DT, horizon_s=horizon_steps * DT)
    request = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(real_time_factor=PACE))
    return stub(twin).Start(request, timeout=300).run_id


def until(probe, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def stored_steps(url: str, run_id: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = one(
            conn.execute(
                "SELECT coalesce(max(step), -1) FROM site_series WHERE run_id = %s", (run_id,)
            )
        )
    return row[0]


def inject(twin: LocalTwin, run_id: str, service: str, how: str, outage_s: float) -> Fault:
    """One fault; its recovery time runs from the end of the outage until the run has
    advanced again (for the historian: until it has stored what the clock had done)."""
    fault = Fault(f"{service} {how} {outage_s:.0f} s")
    process = twin.processes[service]
    if how == "SIGKILL":
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        time.sleep(outage_s)
        twin.restart(service)
    else:
        os.kill(process.pid, signal.SIGSTOP)
        time.sleep(outage_s)
        os.kill(process.pid, signal.SIGCONT)
    back = time.monotonic()
    at = snapshot(twin, run_id).step
    if service == "historian":
        until(lambda: stored_steps(database_url(twin), run_id) >= at - 1, f"{fault.name}: rows")
    else:
        until(lambda: snapshot(twin, run_id).step > at, f"{fault.name}: progress")
    fault.recovery_s = time.monotonic() - back
    return fault


def inject_together(twin: LocalTwin, run_id: str, services: tuple[str, ...], outage_s: float):
    """Several services paused over the same window: a long outage of each, in one wait."""
    fault = Fault(f"{' + '.join(services)} SIGSTOP {outage_s:.0f} s")
    pids = [twin.processes[service].pid for service in services]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(outage_s)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    back = time.monotonic()
    at = snapshot(twin, run_id).step
    until(lambda: snapshot(twin, run_id).step > at, f"{fault.name}: progress")
    if "historian" in services:
        until(lambda: stored_steps(database_url(twin), run_id) >= at - 1, f"{fault.name}: rows")
    fault.recovery_s = time.monotonic() - back
    return fault


def test_faults_under_a_live_run_lose_and_duplicate_nothing(tmp_path, capsys) -> None:
    env = {"TWIN_RUN_STALL_TIMEOUT_S": "240"}
    log = str(tmp_path / "services.log")
    with LocalTwin(SITE, free_addresses(), env=env, ready_timeout_s=180, log_path=log) as twin:
        published: dict[int, list[float]] = {}
        run: dict[str, str] = {}

        async def main() -> list[Fault]:
            nc = await nats.connect(nats_url(twin))

            async def keep(msg):
                state = power_pb2.PowerState.FromString(msg.data)
                if state.run_id == run.get("id") and state.step >= 0:
                    published.setdefault(state.step, []).append(state.meter_w)

            await nc.subscribe(f"twin.{SITE}.power.state", cb=keep)
            await nc.flush()
            try:
                return await asyncio.to_thread(faults)
            finally:
                await nc.close()

        def faults() -> list[Fault]:
            run["id"] = run_id = start(twin, STEPS)
            done = []
            for domain in ("compute", "cooling", "power", "energy"):
                done.append(inject(twin, run_id, domain, "SIGKILL", SHORT))
                done.append(inject(twin, run_id, domain, "SIGSTOP", SHORT))
            done.append(inject(twin, run_id, "historian", "SIGKILL", SHORT))
            done.append(inject(twin, run_id, "historian", "SIGSTOP", SHORT))
            done.append(inject(twin, run_id, "twin", "SIGSTOP", SHORT))
            done.append(inject(twin, run_id, "cooling", "SIGSTOP", LONG))
            done.append(inject(twin, run_id, "power", "SIGKILL", LONG))
            long_pause = ("compute", "energy", "historian", "twin")
            done.append(inject_together(twin, run_id, long_pause, LONG))
            at = snapshot(twin, run_id).step
            assert at < STEPS, f"the run ended at step {at} before the last fault"
            stub(twin).SetSpeed(
                twin_pb2.SetSpeedRequest(
                    run_id=run_id, speed=clock_pb2.Speed(as_fast_as_possible=True)
                ),
                timeout=10,
            )
            until(lambda: snapshot(twin, run_id).state == snapshot_pb2.RUN_STATE_STOPPED, "end")
            return done

        done = asyncio.run(asyncio.wait_for(main(), 1200))
        run_id = run["id"]
        final = snapshot(twin, run_id)
        assert (final.step, final.reason) == (STEPS, "")

        # Every step stored exactly once, complete, with the published values.
        def complete() -> list[tuple]:
            with psycopg.connect(database_url(twin), autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT step, facility_w FROM site_series WHERE run_id = %s ORDER BY step",
                    (run_id,),
                ).fetchall()
            return rows if len(rows) == STEPS and all(r[1] is not None for r in rows) else []

        rows = until(complete, "every step stored", 150)
        steps = [r[0] for r in rows]
        lost = STEPS - len(set(steps))
        duplicated = len(steps) - len(set(steps))
        assert (lost, duplicated) == (0, 0)
        assert sorted(published) == list(range(STEPS))
        differing = [k for k, v in published.items() if len(set(v)) > 1]
        assert differing == [], "a re-published step changed its values"
        meter = np.array([published[k][0] for k in range(STEPS)])
        np.testing.assert_array_equal(np.array([r[1] for r in rows]), meter)
        whole = simulate(load_site(SMALL), STEPS * DT, DT, DT, merge_identical=False)
        np.testing.assert_allclose(meter, whole.means["facility_w"], rtol=1e-6)
        with psycopg.connect(database_url(twin), autocommit=True) as conn:
            record = conn.execute(
                "SELECT dt_s, horizon_s, real_time_factor, status, last_step,"
                " ended_at > started_at FROM runs WHERE run_id = %s",
                (run_id,),
            ).fetchone()
        assert record == (DT, STEPS * DT, PACE, "completed", STEPS - 1, True)

        # The clock's own process killed mid-run: that run ends FAILED, and says why.
        second = start(twin, STEPS)
        until(lambda: snapshot(twin, second).step > 20, "the second run to go")
        os.kill(twin.processes["twin"].pid, signal.SIGKILL)
        twin.processes["twin"].wait(30)
        time.sleep(SHORT)
        twin.restart("twin")
        back = time.monotonic()
        until(lambda: health(twin.addresses["twin"]) == "SERVING", "the twin to serve")
        failed = snapshot(twin, second)
        clock_fault = Fault(f"twin SIGKILL {SHORT:.0f} s (run ends FAILED)")
        clock_fault.recovery_s = time.monotonic() - back
        assert failed.state == snapshot_pb2.RUN_STATE_FAILED
        assert failed.reason == "the twin service restarted during the run"

        def status() -> tuple | None:
            with psycopg.connect(database_url(twin), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT status, end_reason FROM runs WHERE run_id = %s", (second,)
                ).fetchone()
            return row if row and row[0] != "running" else None

        assert until(status, "the failed run's record") == ("failed", failed.reason)
        assert all(p.poll() is None for p in twin.processes.values())

    with capsys.disabled():
        print("\n| fault | recovery (s) | lost | duplicated |\n|---|---|---|---|")
        for fault in [*done, clock_fault]:
            print(f"| {fault.name} | {fault.recovery_s:.1f} | {lost} | {duplicated} |")
